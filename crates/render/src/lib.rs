//! rktup-render
