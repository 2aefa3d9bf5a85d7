//! Fuzz target `queue_recover`: the body is `ipcprop::fuzz::queue_recover` (see its docs for the property).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ipcprop::fuzz::queue_recover(data));
