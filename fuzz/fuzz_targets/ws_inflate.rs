#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pushwire::fuzzing::ws_inflate(data));
