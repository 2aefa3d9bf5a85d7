//! Fuzz target `ring_hostile`: the body is `ipcprop::fuzz::ring_hostile` (see its docs for the property).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ipcprop::fuzz::ring_hostile(data));
