//! picket
