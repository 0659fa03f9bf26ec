#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| singleuser_profiles_fuzz::template(data));
