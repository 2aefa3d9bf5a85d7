//! Fuzz target `frame_roundtrip`: the body is `ipcprop::fuzz::frame_roundtrip` (see its docs for the property).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ipcprop::fuzz::frame_roundtrip(data));
