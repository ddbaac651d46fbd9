//! The `async-events` command line on an embedded lake.

mod common;

use common::lakes::store;
use common::scripted::scripted_033;
use datafusion_async_events::Lake;
use std::process::{Command, Output};

fn cli(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_async-events"))
        .args(args)
        .current_dir(dir)
        .env_remove("MICROMEGAS_SQL_CONNECTION_STRING")
        .env_remove("MICROMEGAS_OBJECT_STORE_URI")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// A folder whose `./lake` is an embedded lake holding the scripted process.
async fn folder_with_lake() -> (tempfile::TempDir, uuid::Uuid) {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::create_embedded(dir.path().join("lake"))
        .await
        .unwrap();
    let rec = scripted_033().recording;
    store(&lake, &rec).await;
    (dir, rec.process.process_id)
}

#[tokio::test]
async fn processes_and_queries_in_three_formats() {
    let (dir, pid) = folder_with_lake().await;
    let out = cli(dir.path(), &["processes"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    assert!(listing.contains(&pid.to_string()), "{listing}");
    assert!(listing.contains("| streams | blocks |"), "{listing}");

    let sql = format!(
        "SELECT name, event_type, depth, properties FROM async_events('{pid}') WHERE event_type = 'end' ORDER BY time"
    );
    let out = cli(dir.path(), &["sql", &sql]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.contains("dyn_named_é") && table.contains("{kind: root}"),
        "{table}"
    );

    let out = cli(dir.path(), &["sql", "--format", "csv", &sql]);
    let csv = text(&out.stdout);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "name,event_type,depth,properties");
    assert_eq!(lines.len(), 1 + 5, "{csv}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"{note: a,\"\"b\"\" ü, rows: 3}\"")),
        "quoted CSV: {csv}"
    );

    let out = cli(dir.path(), &["sql", "--format", "json", &sql]);
    let json = text(&out.stdout);
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0]["event_type"], "end");
    let tagged = rows.iter().find(|r| r["name"] == "tagged_named").unwrap();
    assert_eq!(tagged["properties"]["rows"], "3");

    // An explicit lake gives the same answer.
    let db = format!("sqlite://{}/lake/telemetry.db", dir.path().display());
    let store = url::Url::from_directory_path(dir.path().join("lake"))
        .unwrap()
        .to_string();
    let out = cli(
        std::path::Path::new("/"),
        &[
            "--db", &db, "--store", &store, "sql", "--format", "csv", &sql,
        ],
    );
    assert_eq!(text(&out.stdout), csv);
}

#[tokio::test]
async fn errors_print_one_line_and_exit_non_zero() {
    let (dir, _pid) = folder_with_lake().await;
    let unknown = uuid::Uuid::new_v4();
    let cases = [
        (
            vec!["sql".to_string(), "SELEC nonsense".into()],
            "error: ".to_string(),
        ),
        (
            vec![
                "sql".into(),
                format!("SELECT * FROM async_events('{unknown}')"),
            ],
            format!("process {unknown} is not in the lake"),
        ),
        (
            vec!["sql".into(), "SELECT * FROM async_events('global')".into()],
            "'global' is not supported".into(),
        ),
        (
            vec!["--db".into(), "sqlite::memory:".into(), "processes".into()],
            "--db and --store go together".into(),
        ),
        (
            vec![
                "--db".into(),
                "postgres://u:pw@127.0.0.1:1/x".into(),
                "--store".into(),
                "memory://".into(),
                "processes".into(),
            ],
            "cannot connect to the metadata database".into(),
        ),
    ];
    for (args, expected) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = cli(dir.path(), &args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = text(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(&expected),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("pw@"), "no password in messages: {stderr}");
    }
}

#[tokio::test]
async fn the_lake_comes_from_micromegas_environment_variables() {
    let (dir, pid) = folder_with_lake().await;
    let db = format!("sqlite://{}/lake/telemetry.db", dir.path().display());
    let store = url::Url::from_directory_path(dir.path().join("lake"))
        .unwrap()
        .to_string();
    let elsewhere = tempfile::tempdir().unwrap();
    let run = |vars: &[(&str, &str)]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_async-events"));
        command
            .arg("processes")
            .current_dir(elsewhere.path())
            .env_remove("MICROMEGAS_SQL_CONNECTION_STRING")
            .env_remove("MICROMEGAS_OBJECT_STORE_URI");
        for (k, v) in vars {
            command.env(k, v);
        }
        command.output().unwrap()
    };
    let out = run(&[
        ("MICROMEGAS_SQL_CONNECTION_STRING", &db),
        ("MICROMEGAS_OBJECT_STORE_URI", &store),
    ]);
    assert!(
        text(&out.stdout).contains(&pid.to_string()),
        "{}",
        text(&out.stderr)
    );
    let out = run(&[("MICROMEGAS_SQL_CONNECTION_STRING", &db)]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains(
        "MICROMEGAS_SQL_CONNECTION_STRING is set but MICROMEGAS_OBJECT_STORE_URI is not"
    ));
    // Neither, and no lake in the working folder: an error saying how to point at one, and
    // nothing created.
    let out = run(&[]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("no micromegas lake in lake (no telemetry.db)")
            && stderr.contains("MICROMEGAS_SQL_CONNECTION_STRING and MICROMEGAS_OBJECT_STORE_URI"),
        "{stderr}"
    );
    assert!(!elsewhere.path().join("lake").exists());
}

#[tokio::test]
async fn skipped_blocks_are_warned_about_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::create_embedded(dir.path().join("lake"))
        .await
        .unwrap();
    let rec = scripted_033().recording;
    store(&lake, &rec).await;
    let pid = rec.process.process_id;
    let victim = &rec.blocks[0];
    let blob = dir
        .path()
        .join("lake")
        .join(datafusion_async_events::lake::blob_key(
            victim.process_id,
            victim.stream_id,
            victim.block_id,
        ));
    std::fs::remove_file(blob).unwrap();
    let sql = format!("SELECT count(*) AS n FROM async_events('{pid}')");
    let out = cli(dir.path(), &["sql", &sql]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("is missing"));
    let out = cli(
        dir.path(),
        &["--skip-bad-blocks", "sql", "--format", "csv", &sql],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "n\n3\n", "the rows of the other block");
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("warn: skipped block") && stderr.contains(&victim.block_id.to_string()),
        "{stderr}"
    );
    // -v adds the crate's debug messages (a filter evaluated above the scan, here).
    let out = cli(
        dir.path(),
        &[
            "-v",
            "--skip-bad-blocks",
            "sql",
            &format!("SELECT count(*) FROM async_events('{pid}') WHERE depth = NULL OR depth = 1"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[tokio::test]
async fn quickstart_records_a_service_and_answers_the_example_queries() {
    let dir = tempfile::tempdir().unwrap();
    let out = cli(dir.path(), &["quickstart"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("Recorded process "), "{stdout}");
    for title in [
        "Top-level async operations by average duration",
        "How deep the async call tree goes",
        "Spans that never finished",
        "Which worker thread ran what",
    ] {
        assert!(stdout.contains(title), "{title}: {stdout}");
    }
    assert!(
        stdout.contains("handle_request") && stdout.contains("tokio-rt-worker"),
        "{stdout}"
    );
    // The recording is in ./lake, where the other commands find it.
    let out = cli(dir.path(), &["processes"]);
    assert!(
        text(&out.stdout).contains("async-events"),
        "{}",
        text(&out.stdout)
    );
}

#[cfg(all(unix, feature = "server"))]
#[tokio::test]
async fn serve_refuses_a_token_file_others_can_read_and_warns_when_insecure() {
    use std::io::BufRead;
    use std::os::unix::fs::PermissionsExt;
    let (dir, _pid) = folder_with_lake().await;
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let token_arg = token.to_str().unwrap();
    let out = cli(
        dir.path(),
        &["serve", "--addr", "127.0.0.1:0", "--token-file", token_arg],
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("chmod 600"), "{stderr}");
    // Without a token on every interface: served, with a warning first.
    let mut child = Command::new(env!("CARGO_BIN_EXE_async-events"))
        .args(["serve", "--addr", "0.0.0.0:0", "--insecure"])
        .current_dir(dir.path())
        .env_remove("MICROMEGAS_SQL_CONNECTION_STRING")
        .env_remove("MICROMEGAS_OBJECT_STORE_URI")
        .env_remove("ASYNC_EVENTS_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let mut served = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut served)
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(first.starts_with("warning: --insecure"), "{first}");
    assert!(served.starts_with("serving "), "{served}");
}
