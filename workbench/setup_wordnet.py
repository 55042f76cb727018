"""Install WordNet 3.0 for NLTK's METEOR from Debian's `wordnet-base` and `wordnet-sense-index`.

NLTK cannot download corpora offline, but Debian ships the WordNet 3.0 database files. We copy
them (NLTK rejects symlinks that leave its data folder) into `<sys.prefix>/nltk_data`, a folder
NLTK searches by default, and write the `lexnames` file NLTK expects, generated from the
`lexnames(5WN)` manual page. Run as `python -m workbench.setup_wordnet`; idempotent.
"""

from __future__ import annotations

import gzip
import re
import shutil
import sys
from pathlib import Path

DEBIAN_WORDNET = Path("/usr/share/wordnet")
LEXNAMES_MANPAGE = Path("/usr/share/man/man5/lexnames.5WN.gz")
POS_NUMBER = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


def wordnet_target() -> Path:
    return Path(sys.prefix) / "nltk_data" / "corpora" / "wordnet"


def lexnames_from_manpage(manpage: str) -> list[str]:
    """Lines `NN<TAB>lexname<TAB>pos` for every `NN lexname description` row of the manual page."""
    rows = re.findall(r"^(\d\d)\s+((noun|verb|adj|adv)\.\w+)", manpage, flags=re.MULTILINE)
    return [f"{number}\t{name}\t{POS_NUMBER[pos]}" for number, name, pos in rows]


def install(target: Path | None = None) -> Path:
    target = target or wordnet_target()
    if (target / "lexnames").exists() and (target / "index.sense").exists():
        return target
    if not (DEBIAN_WORDNET / "data.noun").exists() or not (DEBIAN_WORDNET / "index.sense").exists():
        raise SystemExit("WordNet files missing: install the Debian packages wordnet-base and wordnet-sense-index")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for source in DEBIAN_WORDNET.iterdir():
        if source.is_file():
            shutil.copyfile(source, staging / source.name)
    with gzip.open(LEXNAMES_MANPAGE, "rt") as manpage:
        lines = lexnames_from_manpage(manpage.read())
    if len(lines) != 45:
        raise SystemExit(f"{LEXNAMES_MANPAGE}: expected 45 lexicographer file names, found {len(lines)}")
    (staging / "lexnames").write_text("\n".join(lines) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


if __name__ == "__main__":
    print(f"setup: WordNet for METEOR in {install()}")
