//! rktup-config
