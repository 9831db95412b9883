//! The status page (`GET /` of `serve`) in a REAL headless Chromium: a folder with a ready, an
//! unmatched, an unusable and two invalid labels (one refused for a segment named like a
//! script), served by `serve`; the page's rendered DOM shows the sources, counts, labels and
//! reasons, hostile text as text only, the status filter works, and its screenshot is a page
//! (not blank, with its inline style applied). With a token configured, the page needs it.
//! Chromium is Debian's `chromium` (scripts/test.sh installs it): these tests FAIL without it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use segbridge::fixtures::{write_ct, write_seg, CtSeries, Refs, SegSpec};

/// A segment name that is markup: the quality gate's reason quotes it.
const HOSTILE_SEGMENT: &str = "<script>alert(1)</script> & \"q\"";
/// A folder name that is markup: the source's name shows it.
const HOSTILE_DIR: &str = "in <i>x</i> &amp; \"y\"";
const TOKEN: &str = "status-page-token-7f3a";

struct Served {
    emu: Emu,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    ready: SegSpec,
    unmatched: SegSpec,
    unusable: SegSpec,
    empty: SegSpec,
    hostile: SegSpec,
}

impl Served {
    fn start(token: Option<&str>) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join(HOSTILE_DIR);
        let case = |name: &str, with_ct: bool, f: &dyn Fn(&mut SegSpec)| {
            let ct = CtSeries::new(&format!("page-{name}"), 2);
            if with_ct {
                write_ct(&folder.join(name).join("ct"), &ct, "IM").unwrap();
            }
            let mut s = SegSpec::new(&format!("page-{name}-seg"), &ct);
            s.segments = vec!["liver".into(), "kidney".into()];
            f(&mut s);
            write_seg(&folder.join(name), &s, "seg.dcm").unwrap();
            s
        };
        let ready = case("ready", true, &|_| {});
        let unmatched = case("unmatched", false, &|_| {});
        let unusable = case("unusable", true, &|s| s.refs = Refs::SourceOnly);
        let empty = case("empty", true, &|s| s.faults.empty = true);
        let hostile = case("hostile", true, &|s| {
            s.segments = vec!["liver".into(), HOSTILE_SEGMENT.into()]
        });
        std::fs::write(
            dir.path().join("labels.json"),
            r#"{"1": "liver", "2": "kidney"}"#,
        )
        .unwrap();
        let emu = Emu::start();
        let dataset = emu.create_dataset();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
        let mut cmd = segbridge(dir.path());
        cmd.env("MONAI_API_KEY", &emu.key)
            .env_remove("SEGBRIDGE_HOOK_TOKEN")
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--folder",
            ])
            .arg(&folder)
            .args(["--dataset", &dataset, "--api", &emu.url])
            .args(["--labels", "labels.json", "--strict-labels"])
            .args(["--retry-for", "5"])
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(t) = token {
            cmd.env("SEGBRIDGE_HOOK_TOKEN", t);
        }
        let mut served = Served {
            emu,
            dir,
            port,
            child: Some(cmd.spawn().unwrap()),
            ready,
            unmatched,
            unusable,
            empty,
            hostile,
        };
        // the ready label notified: the listing is recorded and delivered
        let start = Instant::now();
        while entries(&served.emu.notifications()).is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "serve notified nothing: {}",
                served.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        served.wait_listening();
        served
    }

    fn wait_listening(&mut self) {
        let start = Instant::now();
        while self.get("/healthz", None).is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "serve did not listen: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// (status, headers, body) of a request to `path` with an Authorization header.
    fn request(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
    ) -> Option<(u16, reqwest::header::HeaderMap, String)> {
        self.emu.rt.block_on(async {
            let mut r = reqwest::Client::new().request(method.parse().unwrap(), self.url(path));
            if let Some(a) = auth {
                r = r.header("authorization", a);
            }
            let r = r.send().await.ok()?;
            let (code, headers) = (r.status().as_u16(), r.headers().clone());
            Some((code, headers, r.text().await.ok()?))
        })
    }

    fn get(&self, path: &str, auth: Option<&str>) -> Option<(u16, String)> {
        self.request("GET", path, auth).map(|(c, _, b)| (c, b))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            terminate(c);
        }
    }
}

/// Runs Debian's chromium headless on `args` (its own profile in `dir`), killed after 60 s;
/// returns what it printed on stdout.
fn chromium(dir: &Path, args: &[&str]) -> String {
    let run = tempfile::tempdir_in(dir).unwrap();
    let profile = run.path().join("profile");
    let out = run.path().join("stdout");
    let err = run.path().join("stderr");
    let mut child = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu"])
        .args(["--no-first-run", "--disable-extensions", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run chromium ({e}): install Debian's chromium \
                 (`apt-get install --no-install-recommends chromium`; scripts/test.sh does)"
            )
        });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium {args:?} did not finish in 60 s: {}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "chromium {args:?}: {status}: {}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    std::fs::read_to_string(&out).unwrap()
}

/// The DOM chromium built from `url`, serialized (text nodes show `<` as `&lt;`, `&` as `&amp;`).
pub(crate) fn dump_dom(dir: &Path, url: &str) -> String {
    chromium(dir, &["--dump-dom", url])
}

#[test]
fn chromium_renders_the_sources_counts_labels_and_reasons_and_filters_by_status() {
    let s = Served::start(None);
    let dir = s.dir.path();
    let dom = dump_dom(dir, &s.url("/"));
    let has = |dom: &str, what: &str| {
        assert!(dom.contains(what), "{what:?} not in the page:\n{dom}");
    };
    has(&dom, "<title>segbridge status</title>");
    // the source, by name, up
    has(
        &dom,
        "in &lt;i&gt;x&lt;/i&gt; &amp;amp; \"y\"</td><td><span class=\"ok\">up</span>",
    );
    has(
        &dom,
        "MONAI API</td><td><span class=\"ok\">reachable</span>",
    );
    has(&dom, "<span class=\"ok\" id=\"overall\">ok</span>");
    // counts, each a link to its filter
    for link in [
        "<a href=\"/\" class=\"current\">all (5)</a>",
        "<a href=\"/?status=ready\">ready (1)</a>",
        "<a href=\"/?status=invalid\">invalid (2)</a>",
        "<a href=\"/?status=unmatched\">unmatched (1)</a>",
        "<a href=\"/?status=unusable\">unusable (1)</a>",
        "<a href=\"/?status=gone\">gone (0)</a>",
    ] {
        has(&dom, link);
    }
    // delivery: the ready label was told
    has(&dom, "<td id=\"outbox\">0 waiting</td>");
    assert!(!dom.contains("id=\"last-notify\">never<"), "{dom}");
    has(
        &dom,
        "<tr><th>images told to the dataset</th><td>1</td></tr>",
    );
    // each label with its status, and why it is not used
    for (spec, status) in [
        (&s.ready, "ready"),
        (&s.unmatched, "unmatched"),
        (&s.unusable, "unusable"),
        (&s.empty, "invalid"),
        (&s.hostile, "invalid"),
    ] {
        has(
            &dom,
            &format!(
                "<td class=\"uid\">{}</td><td>{status}</td>",
                spec.series_uid()
            ),
        );
    }
    has(&dom, "The 5 first seen most recently, of 5.");
    let row = |uid: &str| {
        let at = dom.find(&format!("<td class=\"uid\">{uid}</td>")).unwrap();
        dom[at..at + dom[at..].find("</tr>").unwrap()].to_string()
    };
    assert!(
        row(&s.empty.series_uid()).contains("empty"),
        "{}",
        row(&s.empty.series_uid())
    );
    // the hostile segment name is text in the reason: no element came of it
    let hostile = row(&s.hostile.series_uid());
    assert!(
        hostile.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; \"q\""),
        "{hostile}"
    );
    assert!(!dom.contains("<script"), "{dom}");
    assert!(!dom.contains("<i>"), "{dom}");

    // the filter: only the invalid ones, and what invalid means
    let invalid = dump_dom(dir, &s.url("/?status=invalid"));
    has(
        &invalid,
        "<a href=\"/?status=invalid\" class=\"current\">invalid (2)</a>",
    );
    has(&invalid, "The 2 first seen most recently, of 2.");
    has(&invalid, "refused by the quality gate");
    for spec in [&s.empty, &s.hostile] {
        has(&invalid, &spec.series_uid());
    }
    for spec in [&s.ready, &s.unmatched, &s.unusable] {
        assert!(!invalid.contains(&spec.series_uid()), "{invalid}");
    }
    let unusable = dump_dom(dir, &s.url("/?status=unusable"));
    has(&unusable, &s.unusable.series_uid());
    assert!(!unusable.contains(&s.empty.series_uid()), "{unusable}");
    let gone = dump_dom(dir, &s.url("/?status=gone"));
    has(&gone, "No labels here.");
}

#[test]
fn chromium_screenshots_a_styled_non_blank_page() {
    let s = Served::start(None);
    let shot: PathBuf = s.dir.path().join("page.png");
    let arg = format!("--screenshot={}", shot.display());
    chromium(s.dir.path(), &[&arg, "--window-size=1200,900", &s.url("/")]);
    let bytes = std::fs::read(&shot).expect("chromium wrote no screenshot");
    assert!(bytes.len() > 20_000, "{} bytes", bytes.len());
    let decoder = png::Decoder::new(std::io::Cursor::new(&bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1200, 900));
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{:?}", info.color_type);
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()]
        .chunks(channels)
        .map(|p| &p[..3])
        .collect();
    let distinct: std::collections::HashSet<&[u8]> = pixels.iter().copied().collect();
    assert!(
        distinct.len() > 20,
        "{} colours: a blank page?",
        distinct.len()
    );
    let near = |p: &[u8], c: [u8; 3]| p.iter().zip(c).all(|(a, b)| a.abs_diff(b) <= 8);
    let white = pixels.iter().filter(|p| near(p, [255, 255, 255])).count();
    assert!(white < pixels.len() * 99 / 100, "all but white: blank");
    // the inline style sheet applied (the policy lets it): the green "ok" badges are drawn
    let green = pixels
        .iter()
        .filter(|p| near(p, [0x1a, 0x7f, 0x37]))
        .count();
    assert!(green > 200, "{green} badge-green pixels: no style applied?");
}

#[test]
fn the_page_escapes_hostile_text_and_answers_only_get() {
    let s = Served::start(None);
    let (code, headers, body) = s.request("GET", "/", None).unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.starts_with("default-src 'none'; style-src 'unsafe-inline'"),
        "{csp}"
    );
    // as sent: the segment name and the folder name escaped, never raw
    assert!(
        body.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;q&quot;"),
        "{body}"
    );
    assert!(
        body.contains("in &lt;i&gt;x&lt;/i&gt; &amp;amp; &quot;y&quot;"),
        "{body}"
    );
    assert!(!body.contains(HOSTILE_SEGMENT) && !body.contains(HOSTILE_DIR));
    assert!(!body.contains("<script") && !body.contains("<i>"));
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let (code, _, _) = s.request(method, "/", None).unwrap();
        assert_eq!(code, 405, "{method}");
    }
    let (code, _, why) = s.request("GET", "/?status=%3Cscript%3E", None).unwrap();
    assert_eq!(code, 400);
    assert!(!why.contains("<script"), "{why}");
    // nothing changed: the page is still the same ledger
    assert!(s
        .get("/?status=ready", None)
        .unwrap()
        .1
        .contains(&s.ready.series_uid()));
}

#[test]
fn with_a_token_configured_the_page_needs_it() {
    let s = Served::start(Some(TOKEN));
    let (code, headers, body) = s.request("GET", "/", None).unwrap();
    assert_eq!(code, 401, "{body}");
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic "));
    assert!(!body.contains(&s.ready.series_uid()));
    let (code, _, _) = s.request("GET", "/", Some("Bearer wrong-token")).unwrap();
    assert_eq!(code, 401);
    let (code, _, body) = s
        .request("GET", "/?status=ready", Some(&format!("Bearer {TOKEN}")))
        .unwrap();
    assert_eq!(code, 200);
    assert!(body.contains(&s.ready.series_uid()), "{body}");
    // a browser: without credentials it gets no page (headless, it has no one to ask for
    // the password), with the token as its Basic password the page
    let refused = dump_dom(s.dir.path(), &s.url("/?status=ready"));
    assert!(!refused.contains(&s.ready.series_uid()), "{refused}");
    let url = format!("http://operator:{TOKEN}@127.0.0.1:{}/?status=ready", s.port);
    let page = dump_dom(s.dir.path(), &url);
    assert!(page.contains(&s.ready.series_uid()), "{page}");
    // the token never shows on the page nor in the log
    assert!(!page.contains(TOKEN));
    assert!(!s.log().contains(TOKEN), "{}", s.log());
}
