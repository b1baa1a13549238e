//! Update logic without I/O: the state machine, the persisted record, and
//! the install policy (board, anti-rollback, minimum installed version).

pub mod machine;
pub mod persist;
pub mod policy;
