#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| esm_fuzz_checks::mapping_spec::check(data));
