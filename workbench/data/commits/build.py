"""Build the real-data commit set from a git history (deterministic):
`python -m workbench.data.commits.build --git-dir PATH --source OWNER/NAME [--rev REV] [--until YYYY-MM-DD] [--out DIR]`.

Each commit is a LaMP-4 item: its body (the message after the subject) is the "article", its
subject the "headline". Commits are kept when they are not merges, reverts, cherry-picks or bot
commits and their scrubbed body (`scrub.py`) has `MIN_BODY`..`MAX_BODY` characters. An author's
newest kept commits (up to `EXAMPLES_PER_USER`, always leaving `MIN_PROFILE` older ones) are the
questions; the `PROFILE_CAP` newest commits before them are the profile, newest first, shared by
the author's questions. Authors are split by user into `train` and `dev`. User ids are salted
hashes of the author's e-mail address; addresses used with the same full author name are one user.

Written under `--out`: `LaMP-4/{train,dev}_{questions,outputs}.json` and `manifest.json` (source,
revision, commit dates, parameters, counts, file digests). Same history and arguments give the
same bytes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import subprocess
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from workbench.data.commits.scrub import EMAIL, Scrubber, is_dropped_trailer, names_in
from workbench.errors import InputError
from workbench.io import write_text

SALT = "workbench-commits-v1"
MIN_BODY, MAX_BODY = 150, 1500
MIN_PROFILE, PROFILE_CAP, EXAMPLES_PER_USER = 6, 24, 2
DEV_FRACTION = 0.4
TASK_INPUT = "Generate a headline for the following article: {}"
SKIPPED_SUBJECT_STARTS = ("revert", "reapply", "[")  # reverts and release-branch cherry-picks
SKIPPED_BODY_PHRASES = ("This reverts commit", "cherry picked from commit")
BOT_MARKERS = ("bot@", "[bot]", "robot", "gopherbot")
FIELD, RECORD = "\x1f", "\x00"
LOG_FORMAT = FIELD.join(("%H", "%an", "%ae", "%cn", "%ct", "%s", "%b"))


@dataclass(frozen=True)
class Commit:
    sha: str
    author: str
    email: str
    committer: str
    time: int
    subject: str
    body: str


Item = tuple[Commit, str, str]  # a kept commit with its scrubbed body and subject


def read_history(git_dir: Path, rev: str) -> tuple[str, list[Commit]]:
    """The resolved commit of `rev` and its non-merge history, oldest first (committer time,
    then hash)."""
    head = _git(git_dir, "rev-parse", "--verify", f"{rev}^{{commit}}").strip()
    output = _git(git_dir, "log", "--no-merges", "-z", f"--format={LOG_FORMAT}", head)
    commits = []
    for record in filter(None, output.split(RECORD)):
        sha, author, email, committer, time, subject, body = record.strip("\n").split(FIELD, 6)
        commits.append(Commit(sha, author, email, committer, int(time), subject, body))
    return head, sorted(commits, key=lambda commit: (commit.time, commit.sha))


def _git(git_dir: Path, *args: str) -> str:
    command = ["git", "--git-dir", str(git_dir), "-c", "i18n.logOutputEncoding=UTF-8", *args]
    try:
        result = subprocess.run(command, capture_output=True, check=True)
    except FileNotFoundError:
        raise InputError("git is not installed (the commit set is read with git)") from None
    except subprocess.CalledProcessError as error:
        message = error.stderr.decode("utf-8", "replace").strip().splitlines()
        raise InputError(f"{git_dir}: git {args[0]} failed: {message[-1] if message else error.returncode}") from None
    return result.stdout.decode("utf-8", "replace")


def is_bot(commit: Commit) -> bool:
    identity = f"{commit.author} {commit.email}".lower()
    return any(marker in identity for marker in BOT_MARKERS)


def identities(commits: list[Commit]) -> dict[str, str]:
    """`{lower-cased e-mail: user id}`: addresses joined when they share an author full name."""
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    for commit in commits:
        email = "e:" + commit.email.lower()
        root(email)
        if len(commit.author.split()) >= 2:
            parent[root(email)] = root("n:" + " ".join(commit.author.split()))
    groups: dict[str, list[str]] = defaultdict(list)
    for key in list(parent):
        if key.startswith("e:"):
            groups[root(key)].append(key[2:])
    return {email: _pseudonym(min(emails)) for emails in groups.values() for email in emails}


def _pseudonym(email: str) -> str:
    return "u" + hashlib.sha256(f"{SALT}:{email}".encode()).hexdigest()[:10]


def kept_items(commits: list[Commit]) -> dict[str, list[Item]]:
    """`{user id: [(commit, scrubbed body, scrubbed subject)]}`, oldest first, after the filters;
    a body seen before (in an older kept commit) is dropped."""
    names = {commit.author for commit in commits} | {commit.committer for commit in commits}
    for commit in commits:
        names |= names_in(commit.body)
    scrubber, users = Scrubber(names), identities(commits)
    per_user: dict[str, list[Item]] = defaultdict(list)
    seen: set[str] = set()
    for commit in commits:
        subject = commit.subject.strip()
        if is_bot(commit) or not subject or subject.lower().startswith(SKIPPED_SUBJECT_STARTS):
            continue
        if any(phrase in commit.body for phrase in SKIPPED_BODY_PHRASES):
            continue
        body = scrubber.body(commit.body)
        if not MIN_BODY <= len(body) <= MAX_BODY or body in seen:
            continue
        seen.add(body)
        per_user[users[commit.email.lower()]].append((commit, body, scrubber.text(subject)))
    return per_user


def questions_and_profile(items: list[Item]) -> tuple[list[Item], list[Item]]:
    """An author's questions (their newest items, leaving `MIN_PROFILE` older ones) and profile
    (the `PROFILE_CAP` newest items before the questions, newest first); `items` oldest first."""
    n_questions = min(EXAMPLES_PER_USER, len(items) - MIN_PROFILE)
    return items[-n_questions:], items[:-n_questions][::-1][:PROFILE_CAP]


def _date(time: int) -> str:
    return dt.datetime.fromtimestamp(time, dt.UTC).strftime("%Y-%m-%d")


def build(git_dir: Path, out: Path, source: str, rev: str = "HEAD", until: str | None = None) -> dict:
    """Write the set under `out` and return the manifest (also written as `manifest.json`)."""
    head, commits = read_history(git_dir, rev)
    if until is not None:
        try:
            limit = dt.datetime.fromisoformat(until).replace(tzinfo=dt.UTC) + dt.timedelta(days=1)
        except ValueError:
            raise InputError(f"--until: expected a date YYYY-MM-DD, got {until!r}") from None
        commits = [commit for commit in commits if commit.time < limit.timestamp()]
    if not commits:
        raise InputError(f"{git_dir}: no commits at {rev}" + (f" until {until}" if until else ""))
    per_user = {user: items for user, items in kept_items(commits).items() if len(items) > MIN_PROFILE}
    users = sorted(per_user)
    n_dev = round(DEV_FRACTION * len(users))
    split_of = {user: "dev" if index < n_dev else "train" for index, user in enumerate(users)}
    files: dict[str, object] = {}
    used: list[int] = []
    next_id = 1000
    for split in ("train", "dev"):
        questions, golds = [], []
        for user in (user for user in users if split_of[user] == split):
            asked, profile_items = questions_and_profile(per_user[user])
            used += [commit.time for commit, _, _ in profile_items + asked]
            for _, body, subject in asked:
                question_id = str(next_id)
                next_id += 1
                profile = [
                    {"text": text, "title": title, "date": _date(commit.time), "id": f"{question_id}{index}"}
                    for index, (commit, text, title) in enumerate(profile_items)
                ]
                questions.append({"id": question_id, "user_id": user, "input": TASK_INPUT.format(body), "profile": profile})
                golds.append({"id": question_id, "output": subject})
        files[f"LaMP-4/{split}_questions.json"] = questions
        files[f"LaMP-4/{split}_outputs.json"] = {"task": "LaMP_4", "golds": golds}
    if next_id > 9999:
        raise InputError(f"{git_dir}: more than 9000 questions; the 4-digit question ids would collide with item ids")
    _refuse_leaks(files)
    texts = {name: json.dumps(data, indent=1, ensure_ascii=False) + "\n" for name, data in files.items()}
    manifest = {
        "source": source,
        "revision": head,
        "until": until,
        "newest_commit_in_history": _date(commits[-1].time),
        "commit_dates_used": [_date(min(used)), _date(max(used))] if used else None,
        "parameters": {
            "salt": SALT, "min_body_chars": MIN_BODY, "max_body_chars": MAX_BODY, "min_profile": MIN_PROFILE,
            "profile_cap": PROFILE_CAP, "examples_per_user": EXAMPLES_PER_USER, "dev_fraction": DEV_FRACTION,
        },
        "counts": {split: _counts(files[f"LaMP-4/{split}_questions.json"]) for split in ("train", "dev")},  # type: ignore[arg-type]
        "sha256": {name: hashlib.sha256(text.encode()).hexdigest() for name, text in texts.items()},
    }  # fmt: skip
    for name, text in texts.items():
        write_text(out / name, text)
    write_text(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return manifest


def _counts(questions: list[dict]) -> dict[str, int]:
    sizes = [len(question["profile"]) for question in questions]
    return {
        "users": len({question["user_id"] for question in questions}),
        "questions": len(questions),
        "min_profile": min(sizes, default=0),
        "max_profile": max(sizes, default=0),
    }


def leaks(text: str) -> list[str]:
    """What in `text` the scrubbing should have removed: e-mail addresses and dropped trailer lines."""
    found = EMAIL.findall(text)
    return found + [line for line in text.splitlines() if is_dropped_trailer(line)]


def _refuse_leaks(files: dict[str, object]) -> None:
    """A last gate before anything is written: no address or trailer line in any text."""
    for name, data in files.items():
        records = data if isinstance(data, list) else data["golds"]  # type: ignore[index]
        for record in records:
            texts = [record.get("input", ""), record.get("output", "")]
            texts += [str(item[field]) for item in record.get("profile", []) for field in ("text", "title")]
            found = [leak for text in texts for leak in leaks(text)]
            if found:
                raise InputError(f"{name}, id {record['id']}: scrubbing left {found[0]!r}; nothing was written")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--git-dir", type=Path, required=True, help="A git directory (bare or .git) to read.")
    parser.add_argument("--source", required=True, help="Where the history comes from, recorded (e.g. golang/tools).")
    parser.add_argument("--rev", default="HEAD", help="The commit whose history is read.")
    parser.add_argument("--until", default=None, help="Only commits committed on or before this date (YYYY-MM-DD, UTC).")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent, help="Output folder.")
    args = parser.parse_args(argv)
    manifest = build(args.git_dir, args.out, args.source, args.rev, args.until)
    size = sum((args.out / name).stat().st_size for name in manifest["sha256"])
    print(f"{args.source} at {manifest['revision'][:12]}: commits used {manifest['commit_dates_used']}")
    for split, counts in manifest["counts"].items():
        print(f"  {split}: {counts['users']} users, {counts['questions']} questions, "
              f"profiles of {counts['min_profile']}-{counts['max_profile']} items")  # fmt: skip
    print(f"  {size / 1e6:.2f} MB under {args.out}")


if __name__ == "__main__":
    main()
