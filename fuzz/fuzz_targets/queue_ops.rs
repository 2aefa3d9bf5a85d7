//! Fuzz target `queue_ops`: the body is `ipcprop::fuzz::queue_ops` (see its docs for the property).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ipcprop::fuzz::queue_ops(data));
