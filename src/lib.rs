//! Query the async span events recorded by micromegas-instrumented programs with SQL in
//! Apache DataFusion.

mod error;
pub mod format;
pub mod lake;
#[cfg(feature = "recorder")]
pub mod recorder;

pub use error::{Error, Result};
pub use lake::Lake;
