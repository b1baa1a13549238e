//! Update logic without I/O: the state machine, the persisted record, the
//! install policy, and the engine that sequences them over traits the edge
//! implements (boot env, record store, slot writer).

pub mod engine;
pub mod machine;
pub mod mutant;
pub mod persist;
pub mod policy;
