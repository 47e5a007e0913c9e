//! Mounts the viewer; everything else lives in the library.

fn main() {
    // The static "opening" notice in index.html stands in until the WebAssembly runs.
    if let Some(notice) = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.get_element_by_id("boot-status"))
    {
        notice.remove();
    }
    leptos::mount::mount_to_body(securetext_viewer::app::App);
}
