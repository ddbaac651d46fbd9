//! The scope `hash` column: chained xxh32 of name, filename, target and line, as micromegas
//! computes it, so that hashes agree with micromegas's own tables.

use xxhash_rust::xxh32::xxh32;

/// `xxh32(line LE, seed = xxh32(target, seed = xxh32(filename, seed = xxh32(name, 0))))`.
pub fn scope_hash(name: &str, filename: &str, target: &str, line: u32) -> u32 {
    let h = xxh32(name.as_bytes(), 0);
    let h = xxh32(filename.as_bytes(), h);
    let h = xxh32(target.as_bytes(), h);
    xxh32(&line.to_le_bytes(), h)
}

#[cfg(test)]
mod tests {
    use super::scope_hash;

    #[test]
    fn micromegas_test_vectors() {
        assert_eq!(
            scope_hash("test_function", "test.rs", "test_target", 42),
            3538048325
        );
        assert_eq!(
            scope_hash("scratch::top", "src/main.rs", "scratch", 79),
            1139869681
        );
        assert_eq!(scope_hash("", "", "", 0), 2658107796);
    }
}
