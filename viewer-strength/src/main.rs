//! The web worker: answers each `{id, password, inputs}` message with `{id, score}` (see the
//! library's docs). Built for wasm32 only; natively this binary does nothing.

#[cfg(target_arch = "wasm32")]
fn main() {
    use js_sys::{Array, Object, Reflect};
    use wasm_bindgen::prelude::*;
    use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

    let scope: DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let reply_to = scope.clone();
    let on_message = Closure::<dyn Fn(MessageEvent)>::new(move |event: MessageEvent| {
        let data = event.data();
        let field = |name: &str| Reflect::get(&data, &JsValue::from_str(name)).ok();
        let Some(id) = field("id").and_then(|v| v.as_f64()) else {
            return;
        };
        let password = field("password")
            .and_then(|v| v.as_string())
            .unwrap_or_default();
        let inputs: Vec<String> = field("inputs")
            .map(|v| {
                Array::from(&v)
                    .iter()
                    .filter_map(|i| i.as_string())
                    .collect()
            })
            .unwrap_or_default();
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let score = viewer_strength::score(&password, &inputs);
        let answer = Object::new();
        // Setting a property on a fresh plain object cannot fail.
        let _ = Reflect::set(&answer, &JsValue::from_str("id"), &JsValue::from_f64(id));
        let _ = Reflect::set(
            &answer,
            &JsValue::from_str("score"),
            &JsValue::from_f64(f64::from(score)),
        );
        if reply_to.post_message(&answer).is_err() {
            // The page went away; nothing to tell.
        }
    });
    scope.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    // The handler lives as long as the worker.
    on_message.forget();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("the strength estimator runs as a web worker in the viewer (wasm32 only)");
}
