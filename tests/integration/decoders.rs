//! Decoders of on-disk data reject arbitrary bytes with an error, never a panic.
