//! Integration and fault tests of the chat system live in `tests/`; this crate has no code of its own.
