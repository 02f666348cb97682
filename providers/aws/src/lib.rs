//! rktup-aws
