//! rktup-provider
