//! Nothing here: the tests under `tests/` run this crate's functions and micromegas's on the
//! same data and compare the answers.
