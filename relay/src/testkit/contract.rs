//! Every answer the tests see, checked against the relay's generated OpenAPI document: the
//! route and method are documented, the status is one the operation lists, and a JSON body
//! matches the schema documented for that status. A handler that answers a shape or a status
//! its description does not promise fails the test that provoked it.

use serde_json::{Value, json};

/// The relay's OpenAPI document, as JSON.
#[derive(Debug)]
pub struct Contract {
    doc: Value,
}

impl Contract {
    /// The document of the relay built into this test.
    pub fn new() -> Self {
        Self {
            doc: serde_json::to_value(crate::api::openapi()).unwrap(),
        }
    }

    /// The document's path template matching a concrete path (`/v1/messages/{id}`).
    fn template(&self, path: &str) -> Option<&str> {
        let wanted: Vec<&str> = path.split('/').collect();
        self.doc["paths"].as_object()?.keys().find_map(|template| {
            let parts: Vec<&str> = template.split('/').collect();
            let matches = parts.len() == wanted.len()
                && parts
                    .iter()
                    .zip(&wanted)
                    .all(|(t, w)| t == w || (t.starts_with('{') && !w.is_empty()));
            matches.then_some(template.as_str())
        })
    }

    /// Panics unless `status` and `body` are what the document promises for `method path`.
    pub fn check(&self, method: &str, path: &str, status: u16, body: &Value) {
        let path = path.split('?').next().unwrap_or(path);
        let Some(template) = self.template(path) else {
            // Not an API route: only the documented JSON 404 of unknown endpoints.
            assert_eq!(
                status, 404,
                "{method} {path}: undocumented route answered {status}"
            );
            assert_eq!(body["error"], "not_found", "{method} {path}: {body}");
            return;
        };
        let operation = &self.doc["paths"][template][method.to_ascii_lowercase()];
        if operation.is_null() {
            assert_eq!(
                status, 405,
                "{method} {template}: undocumented method answered {status}"
            );
            return;
        }
        let response = &operation["responses"][status.to_string()];
        assert!(
            !response.is_null(),
            "{method} {template} answered {status}, which its OpenAPI description does not list: {body}"
        );
        let Some(schema) = response["content"]["application/json"].get("schema") else {
            return;
        };
        let mut root = json!({ "components": self.doc["components"] });
        for (key, value) in schema.as_object().unwrap() {
            root[key] = value.clone();
        }
        let validator = jsonschema::validator_for(&root).unwrap_or_else(|e| {
            panic!("{method} {template} {status}: schema does not compile: {e}")
        });
        let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "{method} {template} {status}: the body does not match its documented schema: {errors:?}\n{body}"
        );
    }
}

impl Default for Contract {
    fn default() -> Self {
        Self::new()
    }
}
