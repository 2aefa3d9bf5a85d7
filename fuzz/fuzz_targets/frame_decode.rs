//! Fuzz target `frame_decode`: the body is `ipcprop::fuzz::frame_decode` (see its docs for the property).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ipcprop::fuzz::frame_decode(data));
