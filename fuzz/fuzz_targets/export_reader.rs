#![no_main]
// The body, and what it checks: hushwire_fuzz_checks::export_reader.
libfuzzer_sys::fuzz_target!(|data: &[u8]| hushwire_fuzz_checks::export_reader(data));
