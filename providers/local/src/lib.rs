//! rktup-local
