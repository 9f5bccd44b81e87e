//! The merge algorithm: dot-paths spliced into a session's JSON text without
//! parsing it into a tree ([`splice`]), and the threads that run the large
//! splices away from the runtime's workers ([`splicer`]). No I/O here.

pub mod splice;
pub mod splicer;
