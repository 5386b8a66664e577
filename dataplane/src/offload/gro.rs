//! placeholder
#[derive(Debug)]
pub struct Coalescer;
#[derive(Debug)]
pub enum PushOutcome {}
