use super::*;
use proptest::prelude::*;

const EXAMPLE: &str = include_str!("../testdata/example.txt");
const C12: &str = include_str!("../testdata/c12.txt");
const C20: &str = include_str!("../testdata/c20.txt");
const G2: &str = include_str!("../testdata/g2.txt");

#[test]
fn round_trips_the_example_and_generated_clusters() {
    for input in [EXAMPLE, C12, C20, G2] {
        let cluster = parse(input).unwrap();
        assert_eq!(write(&cluster), input);
    }
}

#[test]
fn example_loads_the_documented_values() {
    let c = parse(EXAMPLE).unwrap();
    assert_eq!(
        (c.groups.len(), c.nodes.len(), c.instances.len()),
        (1, 4, 7)
    );
    let alpha = &c.nodes[c.node_index("alpha").unwrap()];
    assert!(alpha.data.master && !alpha.offline());
    // plist is in descending instance index order (built by prepending).
    assert_eq!(
        alpha.primaries().collect::<Vec<_>>(),
        vec![5, 4, 3, 2, 1, 0]
    );
    assert_eq!(alpha.state.i_mem, 25600);
    assert_eq!(alpha.state.x_mem, 0);
    assert_eq!(alpha.state.u_cpu, 13);
    assert_eq!(alpha.state.pri_tags_score, 1);
    let beta = &c.nodes[1];
    assert_eq!(beta.state.r_mem, 8192);
    assert_eq!(beta.state.f_mem_f, 63488 - 2048);
    assert_eq!(c.instances[0].excl.len(), 1);
    assert!(c.instances[0].movable);
    assert!(!c.instances[4].movable, "diskless is not movable by hbal");
}

#[test]
fn errors_name_the_line() {
    let bad = EXAMPLE.replace("beta|65536|2048|63488", "beta|65536|2048|6348x");
    let err = parse(&bad).unwrap_err();
    assert_eq!(err.line, 4);
    assert!(err.message.contains("free memory"), "{err}");

    let bad = EXAMPLE.replace(
        "web2|4096|20480|2|running|Y|alpha|beta",
        "web2|4096|20480|2|running|Y|alpha|nosuch",
    );
    let err = parse(&bad).unwrap_err();
    assert_eq!(err.line, 9);
    assert!(
        err.to_string()
            .starts_with("line 9: unknown secondary node"),
        "{err}"
    );

    // A node listed twice: the second line is named.
    let beta = EXAMPLE
        .lines()
        .find(|l| l.starts_with("beta|"))
        .expect("the example has node beta");
    let bad = EXAMPLE.replacen(beta, &format!("{beta}\n{beta}"), 1);
    let err = parse(&bad).unwrap_err();
    assert_eq!(err.line, 5);
    assert!(err.message.contains("duplicate node \"beta\""), "{err}");

    let err = parse("a|b|preferred|\n\nx\n").unwrap_err();
    assert_eq!(err.line, 0);
    assert!(err.message.contains("2 sections instead of 4"));

    let bad = EXAMPLE.replace("|4.0|32.0\ndefault", "|4.0 |32.0\ndefault");
    assert_eq!(
        parse(&bad).unwrap_err().line,
        18,
        "trailing spaces are an error"
    );
    let bad = EXAMPLE.replace(
        "web1|4096|20480|2|running|Y|alpha|beta",
        "web1|4096|20480|2|running|Y|alpha|alpha",
    );
    assert_eq!(parse(&bad).unwrap_err().line, 8);
}

#[test]
fn numbers_follow_haskell_read() {
    assert_eq!(parse_int(" 12"), Some(12));
    assert_eq!(parse_int("-3"), Some(-3));
    assert_eq!(parse_int("12 "), None);
    assert_eq!(parse_int("+1"), None);
    assert_eq!(parse_int("1.0"), None);
    assert_eq!(parse_float("1.5"), Some(1.5));
    assert_eq!(parse_float("1e3"), Some(1000.0));
    assert_eq!(parse_float("65536"), Some(65536.0));
    assert_eq!(parse_float(".5"), None);
    assert_eq!(parse_float("5."), None);
    assert_eq!(parse_float("inf"), None);
    assert_eq!(parse_float("1e"), None);
}

#[test]
fn doubles_are_shown_like_haskell() {
    assert_eq!(haskell_show_double(4.0), "4.0");
    assert_eq!(haskell_show_double(32.0), "32.0");
    assert_eq!(haskell_show_double(0.25), "0.25");
    assert_eq!(haskell_show_double(0.01), "1.0e-2");
    assert_eq!(haskell_show_double(0.015), "1.5e-2");
}

#[test]
fn unknown_resources_make_an_offline_empty_node() {
    let input = EXAMPLE.replace(
        "delta|65536|2048|63488|512000|512000|16|N",
        "delta|?|2048|63488|512000|512000|16|N",
    );
    let c = parse(&input).unwrap();
    let delta = &c.nodes[3];
    assert!(delta.offline());
    assert_eq!(delta.data.t_mem, 0.0);
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(s in "\\PC*") {
        let _ = parse(&s);
    }

    #[test]
    fn mangled_example_never_panics(pos in 0usize..1024, ch in prop::sample::select(vec!['|', '\n', 'Y', '?', '-', '0', ',', ';', ' '])) {
        let mut bytes: Vec<char> = EXAMPLE.chars().collect();
        let pos = pos % bytes.len();
        bytes[pos] = ch;
        let s: String = bytes.into_iter().collect();
        if let Ok(c) = parse(&s) {
            let _ = write(&c);
        }
    }
}
