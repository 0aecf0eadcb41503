//! This crate holds only tests (`tests/`): the Hushwire core exchanging messages through a real
//! relay, checked from the outside.

#![forbid(unsafe_code)]
