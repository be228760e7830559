//! Fuzzes `cairn_fuzz::harness::segment`; see that function for the input format.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::harness::segment(data));
