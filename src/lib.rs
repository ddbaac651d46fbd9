//! Query the async span events recorded by micromegas-instrumented programs with SQL in
//! Apache DataFusion.

pub mod format;
