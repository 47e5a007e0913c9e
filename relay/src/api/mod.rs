//! The HTTP API: the sender API (Bearer API key), the viewer API (link, then session cookie),
//! provider callbacks and operational endpoints.

pub mod ops;
pub mod sender;
pub mod sms_callback;
pub mod viewer;
