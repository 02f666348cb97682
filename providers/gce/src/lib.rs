//! rktup-gce
