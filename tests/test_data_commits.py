"""The commit set builder on a small invented git history (made with `git fast-import` in a temp
folder): what it keeps and drops, how it scrubs names, addresses and trailers, how it splits
users, that it loads through `load_examples`, and that it is byte-for-byte reproducible."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from workbench.data.commits.build import MIN_PROFILE, PROFILE_CAP, build
from workbench.data.commits.scrub import Scrubber
from workbench.data.sources import load_examples
from workbench.errors import InputError

FILLER = (
    "The change keeps the old behaviour for callers that relied on it, adds a test for the new case, "
    "and notes the limits of the approach in the package documentation."
)
ADA = ("Ada Quill", "ada@example.com")
ADA_WORK = ("Ada Quill", "ada.quill@corp.example.org")  # the same person: one user
BO, CY, DEE, ELI = ("Bo Tran", "bo@example.net"), ("Cy Vale", "cy@example.com"), ("Dee Fenn", "dee@example.com"), ("Eli Moss", "eli@example.com")  # fmt: skip
ROBOT = ("Gopher Robot", "gobot@golang.org")
TRAILERS = "Change-Id: I0123456789\nReviewed-on: https://review.example/c/1\nReviewed-by: Cy Vale <cy@example.com>\nSigned-off-by: Ada Quill <ada@example.com>"
# Text that only the dropped commits carry; none of it may reach the files.
DROPPED_MARKS = ("BOTTEXT", "REVERTTEXT", "PICKTEXT", "MERGETEXT", "SHORTTEXT", "LONGTEXT", "DUPLICATETEXT")


def body(tag: str, extra: str = "") -> str:
    return f"{tag} explains why. {FILLER} {extra}".strip()


def history() -> list[tuple[tuple[str, str], str, str]]:
    """(author, subject, message body) oldest first; the bodies of special cases hold traps."""
    commits = [(ADA if i % 2 else ADA_WORK, f"pkg/ada: step {i}", body(f"Ada step {i}")) for i in range(10)]
    commits += [(BO, f"pkg/bo: step {i}", body(f"Bo step {i}")) for i in range(8)]
    commits += [(CY, f"cy/x, cy/y: step {i}", body(f"Cy step {i}")) for i in range(7)]
    commits += [(DEE, f"pkg/dee: step {i}", body(f"Dee step {i}")) for i in range(MIN_PROFILE)]  # one too few
    commits += [(ELI, f"pkg/eli: step {i}", body(f"Eli step {i}")) for i in range(30)]
    commits[3] = (ADA, "pkg/ada: step 3", body("Ada step 3", "Thanks to Bo Tran and to Eli\nMoss for the idea.") + "\n\n" + TRAILERS)  # fmt: skip
    commits[12] = (BO, "pkg/bo: step 2", body("Bo step 2", "Mail ada@example.com, or pin x/tools@v0.1.0. Ping @bcmills; the @diag(x) marker stays.") + "\n\nFixes: golang/go#1")  # fmt: skip
    commits[20] = (CY, "cy/x, cy/y: step 2", body("Cy step 2", "Ada Smith and Zed Unknown wrote the draft.") + "\n\nCo-authored-by: Zed Unknown <zed@example.com>\n\nMore words.")  # fmt: skip
    commits += [
        (ROBOT, "all: update dependencies", body("BOTTEXT")),
        (ELI, 'Revert "pkg/eli: step 29"', body("REVERTTEXT", "This reverts commit 0123abcd.")),
        (ELI, "[release-branch.1] pkg/eli: step 28", body("PICKTEXT", "(cherry picked from commit 0123abcd)")),
        (ELI, "pkg/eli: short", "SHORTTEXT is too short."),
        (ELI, "pkg/eli: long", body("LONGTEXT", FILLER * 20)),
        (ELI, "pkg/eli: again", body("Eli step 5")),  # the same body as an older commit
    ]
    return commits


def make_repo(folder: Path) -> Path:
    """A git repository holding `history()` on `main`, plus one merge commit (MERGETEXT)."""
    stream = []
    for mark, ((name, email), subject, text) in enumerate(history(), start=1):
        when = 1_600_000_000 + 3600 * mark
        message = f"{subject}\n\n{text}\n".encode()
        stream.append(f"commit refs/heads/main\nmark :{mark}\nauthor {name} <{email}> {when} +0000\n".encode())
        stream.append(f"committer {name} <{email}> {when} +0000\ndata {len(message)}\n".encode() + message)
    side = b"pkg/eli: side\n\nToo short to keep.\n"
    stream.append(f"commit refs/heads/side\nmark :900\ncommitter {ELI[0]} <{ELI[1]}> 1700000000 +0000\ndata {len(side)}\n".encode() + side + b"from :1\n")  # fmt: skip
    merge = f"Merge side\n\n{body('MERGETEXT')}\n".encode()
    stream.append(f"commit refs/heads/main\ncommitter {ELI[0]} <{ELI[1]}> 1700000001 +0000\ndata {len(merge)}\n".encode() + merge + b"merge :900\n")  # fmt: skip
    subprocess.run(["git", "init", "-q", "-b", "main", str(folder)], check=True)
    subprocess.run(["git", "-C", str(folder), "fast-import", "--quiet"], input=b"".join(stream), check=True)
    return folder / ".git"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("commits")
    git_dir = make_repo(root / "repo")
    manifest = build(git_dir, root / "out", "example/repo")
    return git_dir, root / "out", manifest


def all_texts(folder: Path) -> str:
    """Every text of the set as loaded (line breaks real, not JSON escapes), one per line block."""
    examples = [e for split in ("train", "dev") for e in load_examples(folder / "LaMP-4", "LaMP-4", split)]
    texts = [e.input for e in examples] + [e.output or "" for e in examples]
    texts += [str(item[field]) for e in examples for item in e.profile for field in ("text", "title", "id", "date")]
    return "\n".join(texts + [e.user_id for e in examples] + [(folder / "manifest.json").read_text(encoding="utf-8")])


def test_rebuild_is_byte_identical_and_manifest_names_the_revision(built, tmp_path: Path) -> None:
    git_dir, out, manifest = built
    build(git_dir, tmp_path, "example/repo")
    files = sorted(p.relative_to(out) for p in out.rglob("*.json"))
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.json"))
    assert {str(p) for p in files} == {"manifest.json"} | {f"LaMP-4/{s}_{k}.json" for s in ("train", "dev") for k in ("questions", "outputs")}  # fmt: skip
    for relative in files:
        assert (tmp_path / relative).read_bytes() == (out / relative).read_bytes(), relative
    head = subprocess.run(["git", "--git-dir", str(git_dir), "rev-parse", "main"], capture_output=True, text=True).stdout
    assert manifest["revision"] == head.strip() and manifest["source"] == "example/repo"
    assert json.loads((out / "manifest.json").read_text()) == manifest


def test_loads_with_expected_users_questions_and_profiles(built) -> None:
    _, out, _ = built
    train, dev = (load_examples(out / "LaMP-4", "LaMP-4", split) for split in ("train", "dev"))
    examples = train + dev
    assert not {e.user_id for e in train} & {e.user_id for e in dev}
    # Ada (10 commits over two addresses, one user), Bo (8), Cy (7), Eli (30 kept); Dee has too few.
    by_user: dict[str, list] = {}
    for example in examples:
        by_user.setdefault(example.user_id, []).append(example)
    sizes = sorted((len(group), len(group[0].profile)) for group in by_user.values())
    assert sizes == [(1, 6), (2, 6), (2, 8), (2, PROFILE_CAP)]
    assert (len({e.user_id for e in train}), len({e.user_id for e in dev})) == (2, 2)  # 40 % of 4 users in dev
    ids = [e.example_id for e in examples] + [str(item["id"]) for e in examples for item in e.profile]
    assert len(set(ids)) == len(ids)  # question ids and profile item ids, all distinct
    assert all(e.input.startswith("Generate a headline for the following article: ") for e in examples)
    eli = next(group for group in by_user.values() if group[0].output.startswith("pkg/eli"))
    assert [e.output for e in eli] == ["pkg/eli: step 28", "pkg/eli: step 29"]
    # The profile: the newest commits before the questions, newest first, capped; Eli's commit
    # with a repeated body (newest of all) is dropped, so the questions are steps 28 and 29.
    assert [item["title"] for item in eli[0].profile] == [f"pkg/eli: step {i}" for i in range(27, 27 - PROFILE_CAP, -1)]
    shared = [[(item["text"], item["title"]) for item in e.profile] for e in eli]
    assert shared[0] == shared[1]  # the author's questions share the profile (with their own item ids)


def test_no_addresses_names_trailers_or_dropped_commits_in_the_files(built) -> None:
    _, out, _ = built
    text = all_texts(out)
    assert not re.search(r"[\w.+-]+@[\w-]+(\.[\w-]+)*\.[A-Za-z]{2,}\b", text)
    assert not re.search(r"example\.(com|net|org)", text)
    for name in ("Ada Quill", "Bo Tran", "Cy Vale", "Eli Moss", "Eli\nMoss", "Zed Unknown", "Ada Smith", "Gopher Robot"):
        assert name not in text, name
    assert not re.search(r"(?im)^\W*(change-id|reviewed-on|reviewed-by|signed-off-by|co-authored-by|fixes):", text)
    assert "@bcmills" not in text and "@diag(x)" in text and "x/tools@v0.1.0" in text
    assert "Thanks to [name] and to [name] for the idea." in text and "More words." in text
    for mark in DROPPED_MARKS + ("Dee step",):
        assert mark not in text, mark


def test_until_keeps_only_commits_up_to_the_date(built, tmp_path: Path) -> None:
    git_dir, _, _ = built
    # Commit k is at 1_600_000_000 + 3600 k s (2020-09-13 12:26 UTC + k h): up to 2020-09-14 has
    # commits 1..35 (Ada, Bo, Cy, Dee and Eli's first four), leaving Ada, Bo and Cy with questions.
    manifest = build(git_dir, tmp_path, "example/repo", until="2020-09-14")
    assert sum(split["users"] for split in manifest["counts"].values()) == 3
    assert manifest["commit_dates_used"][1] <= "2020-09-14"
    with pytest.raises(InputError, match="--until: expected a date"):
        build(git_dir, tmp_path, "example/repo", until="yesterday")


def test_a_folder_that_is_not_a_git_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=re.escape(f"{tmp_path}: git rev-parse failed")):
        build(tmp_path, tmp_path / "out", "example/repo")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Why.\n\nChange-Id: I1\nReviewed-by: Cy Vale <cy@x.org>", "Why."),  # the trailer paragraph
        ("Why.\n\nSigned-off-by: Someone <s@x.org>\nBecause.", "Why.\n\nBecause."),  # a trailer line mid-body
        ("Why.\n\nNote: the last paragraph.", "Why."),  # a last paragraph of Key: value lines is a trailer block
        ("Why.\nNote: kept in a prose paragraph.", "Why.\nNote: kept in a prose paragraph."),
        ("Ask cy@x.org.", "Ask [email]."),
        ("Thanks, Cyril\n  Vale.", "Thanks, [name]."),  # a full name across a line break
        ("From Cyril Smith and Joan Vale.", "From [name] and [name]."),  # a known first name; a known surname
        ("Go Vale and Jo Quill-Smith stay.", "Go Vale and Jo Quill-Smith stay."),  # short or hyphenated words are not used
        ("Ping @gopher-1, (@octo); keep a@b, //@diag and @loc(x).", "Ping @[user], (@[user]); keep a@b, //@diag and @loc(x)."),
        ("Use x/tools@v0.1.0 and Go Modules.", "Use x/tools@v0.1.0 and Go Modules."),
    ],
)
def test_scrubber_by_hand(text: str, expected: str) -> None:
    assert Scrubber(["Cyril Vale", "Jo", "Ada Quill-Smith"]).body(text) == expected


def test_scrubber_without_known_names_changes_only_addresses_and_mentions() -> None:
    assert Scrubber([]).body("Alan Smith met @bob at a@b.io.") == "Alan Smith met @[user] at [email]."
    assert Scrubber(["Mononym"]).body("Alan Smith met Mononym.") == "Alan Smith met Mononym."
