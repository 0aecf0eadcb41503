#![no_main]
// The body, and what it checks: hushwire_fuzz_checks::conversation_members.
libfuzzer_sys::fuzz_target!(|data: &[u8]| hushwire_fuzz_checks::conversation_members(data));
