"""Build the bundled demo set (deterministic): `python -m workbench.data.demo.build`.

Sixty invented users, each with one consistent, machine-checkable writing style (see
`workbench.data.styles`), in two tasks written in the official LaMP JSON schema:

- `LaMP-4/`: headlines for short invented news articles (profile items `{id, text, title}`);
- `LaMP-7/`: paraphrases of short invented tweets (profile items `{id, text}`).

Articles, headlines and tweets come from templates we wrote for this project, filled from small
word lists with a seeded generator; the user's style is applied to every headline / tweet they
"wrote". Users are split into train and dev by user (a third of each style's users in dev).
Questions carry `user_id` (as in the official time-based files); `styles.json` records each
user's style.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from workbench.data.styles import apply_style

SEED = 20260420
HERE = Path(__file__).parent

PLACES = ["Riverton", "Lakeside", "Millbrook", "Harbor City", "Oakdale", "Pine Hollow", "Westfield", "Stonebridge",
          "Fairhaven", "Brookvale", "Cedar Falls", "Ashford"]  # fmt: skip

# (article, neutral headline); slots: {place}, {other}, {n}, {thing}
STORIES = [
    ("The {place} city council voted {n} to 2 on Tuesday to pay for a new {thing}. Supporters said families across the "
     "district would use it, while two members questioned the cost.", "{place} council approves new {thing}",
     ["public library", "skate park", "swimming pool", "community garden", "bus station"]),
    ("Heavy rain flooded several streets in {place} overnight, closing {n} schools and delaying morning trains. "
     "Officials expect the water to go down by the weekend.", "Overnight floods close schools in {place}", [""]),
    ("A family bakery in {place} won the national bread championship on Saturday with a {thing} loaf that the judges "
     "called nearly perfect. The owners have baked in the same shop for {n} years.",
     "{place} bakery wins national bread prize", ["sourdough", "rye", "walnut", "olive"]),
    ("Researchers at the University of {place} have built a {thing} that can be charged in {n} minutes. They hope "
     "to test it in city buses next year.", "{place} researchers build fast-charging {thing}",
     ["battery", "scooter battery", "phone battery"]),
    ("The {place} {thing} beat their rivals from {other} 3 to {n} in the regional final on Sunday in front of a "
     "sold-out crowd.", "{place} {thing} win regional final", ["Rovers", "Hawks", "Lions", "Mariners"]),
    ("Trains between {place} and {other} will stop for {n} weeks this summer while engineers replace a bridge built "
     "a century ago. Replacement buses will run every half hour.", "{place} rail line to close for bridge repairs", [""]),
    ("A rare {thing} has been seen in a park in {place}, drawing crowds of bird watchers with cameras. Experts say "
     "it last visited the region {n} years ago.", "Rare {thing} draws crowds to {place} park",
     ["snowy owl", "hoopoe", "golden oriole", "bittern"]),
    ("The {place} museum opened an exhibition of {thing} on Friday. More than {n} hundred visitors came on the first "
     "day, and the show runs until the end of the year.", "{place} museum opens {thing} exhibition",
     ["old maps", "folk costumes", "early photographs", "Roman coins"]),
    ("Firefighters in {place} rescued a family of {n} from a burning house early on Monday. Nobody was badly hurt, "
     "and the cause of the fire is being investigated.", "Firefighters rescue family from {place} house fire", [""]),
    ("A new ferry will link {place} and {other} from next spring, cutting the journey to {n} minutes. Tickets will "
     "cost the same as the bus.", "New ferry to link {place} and {other}", [""]),
    ("Secondary schools in {place} will start an hour later from next year after a study found that teenagers "
     "slept {n} hours too little on school nights.", "{place} schools to start an hour later", [""]),
    ("Volunteers in {place} planted {n} hundred trees along the river on Sunday as part of a plan to cool the town "
     "centre during summer heat waves.", "Volunteers plant trees along {place} river", [""]),
    ("A {thing} festival in {place} drew record crowds this weekend, with {n} thousand visitors and long queues at "
     "every stall.", "Record crowds at {place} {thing} festival", ["food", "jazz", "kite", "book"]),
    ("The hospital in {place} will open a new children's ward in {n} months, the health board said, after years of "
     "patients travelling to {other}.", "{place} hospital to open children's ward", [""]),
]  # fmt: skip

# (tweet as the user would write it before styling, neutral paraphrase given as the task input)
TWEETS = [
    ("Finally tried the new {thing} place downtown and it was worth the wait",
     "I finally went to the new {thing} restaurant in the city centre, and the wait was worth it.",
     ["ramen", "taco", "pizza", "dumpling"]),
    ("Three hours of {thing} practice today and my hands are done",
     "I practised {thing} for three hours today and now my hands are exhausted.", ["guitar", "piano", "violin"]),
    ("Nothing beats a rainy {thing} with a good book",
     "A rainy {thing} spent with a good book is the best thing there is.", ["Sunday", "afternoon", "evening"]),
    ("My {thing} learned to open the fridge and I am not okay",
     "My {thing} has figured out how to open the refrigerator, which worries me.", ["dog", "cat", "parrot"]),
    ("Missed the last train home again, guess I'm walking",
     "I missed the final train home once more, so it looks like I will be walking.", [""]),
    ("The sunset over {place} tonight was unreal",
     "Tonight's sunset over {place} was incredible.", [""]),
    ("First {thing} of the season and I already regret signing up",
     "It is the first {thing} of the season and I already wish I had not registered.",
     ["marathon", "cycling race", "swim meet"]),
    ("Spent the whole day fixing my bike and it still squeaks",
     "I worked on my bicycle all day and it still makes a squeaking noise.", [""]),
    ("Coffee number four and it is only ten in the morning",
     "It is just ten in the morning and I am on my fourth cup of coffee.", [""]),
    ("Just finished {thing} and I need to talk to someone about that ending",
     "I have just finished {thing} and need to discuss the ending with somebody.",
     ["the new season", "that mystery novel", "the trilogy"]),
    ("Moving day tomorrow and I have packed exactly one box",
     "Tomorrow I move house, and so far I have packed just a single box.", [""]),
    ("The {thing} at the market today were the best I've had all year",
     "The {thing} I bought at the market today were the tastiest I have had this year.",
     ["strawberries", "peaches", "tomatoes"]),
    ("Power cut in {place} so it's candles and board games tonight",
     "There is a power outage in {place}, so tonight will be candles and board games.", [""]),
    ("My little brother beat me at chess for the first time",
     "For the first time ever, my younger brother won against me at chess.", [""]),
]  # fmt: skip

STYLES = (
    ["lowercase"] * 6 + ["caps"] * 5 + ["titlecase"] * 5 + ["question"] * 5 + ["exclaim"] * 5 + ["short"] * 5
    + ["quoted"] * 5
    + [f"prefix:{tag}" for tag in ("BREAKING:", "UPDATE:", "[Local]", "Hot take:", "PSA:", "Heads up:")]
    + [f"signature:{phrase}" for phrase in ("- Rosa", "~ the night desk", "(via Marco)", "-- stay curious", "/end", "- J.")]
    + [f"emoji:{emoji}" for emoji in ("🌿", "🔥", "🚲", "☕", "🎉", "🌊")]
    + [f"hashtag:{tag}" for tag in ("news", "localnews", "weekend", "greatday", "justsaying", "townlife")]
)  # fmt: skip
TASK_INPUT = {
    "LaMP-4": "Generate a headline for the following article: {}",
    "LaMP-7": "Paraphrase the following tweet without any explanation before or after it: {}",
}


def _filled(template: str, rng: random.Random, thing: str) -> dict[str, str]:
    place, other = rng.sample(PLACES, 2)
    return {"place": place, "other": other, "n": str(rng.randint(4, 9)), "thing": thing}


def _story(index: int, rng: random.Random) -> tuple[str, str]:
    article, headline, things = STORIES[index]
    slots = _filled(article, rng, rng.choice(things))
    return article.format(**slots), headline.format(**slots)


def _tweet(index: int, rng: random.Random) -> tuple[str, str]:
    tweet, paraphrase, things = TWEETS[index]
    slots = _filled(tweet, rng, rng.choice(things))
    return tweet.format(**slots), paraphrase.format(**slots)


def user_records(user: int, style: str, rng: random.Random) -> dict[str, list]:
    """Both tasks' question and gold records of one user."""
    user_id = f"u{user:02d}"
    n_profile, n_questions = 5 + user % 4, 1 + user % 2
    records: dict[str, list] = {}
    for task, make, pool in (("LaMP-4", _story, STORIES), ("LaMP-7", _tweet, TWEETS)):
        chosen = rng.sample(range(len(pool)), n_profile + n_questions)
        pairs = [make(index, rng) for index in chosen]  # (input side, output side) before styling
        questions, golds = [], []
        for q in range(n_questions):
            question_id = f"{task[-1]}{user:02d}{q}"
            profile = []
            for position, (source, written) in enumerate(pairs[:n_profile]):
                if task == "LaMP-4":
                    profile.append({"text": source, "title": apply_style(style, written), "id": f"{question_id}{position}"})
                else:
                    profile.append({"text": apply_style(style, source), "id": f"{question_id}{position}"})
            source, written = pairs[n_profile + q]
            task_input, gold = (source, written) if task == "LaMP-4" else (written, source)
            questions.append(
                {"id": question_id, "user_id": user_id, "input": TASK_INPUT[task].format(task_input), "profile": profile}
            )
            golds.append({"id": question_id, "output": apply_style(style, gold)})
        records[task] = [questions, golds]
    return records


def build(root: Path = HERE) -> None:
    rng = random.Random(SEED)
    splits: dict[tuple[str, str], list[list]] = {}
    styles: dict[str, str] = {}
    seen_per_kind: dict[str, int] = {}
    for user, style in enumerate(STYLES, start=1):
        kind = style.split(":")[0]
        seen_per_kind[kind] = seen_per_kind.get(kind, 0) + 1
        split = "dev" if seen_per_kind[kind] % 3 == 2 else "train"
        styles[f"u{user:02d}"] = style
        for task, (questions, golds) in user_records(user, style, rng).items():
            bucket = splits.setdefault((task, split), [[], []])
            bucket[0] += questions
            bucket[1] += golds
    for (task, split), (questions, golds) in sorted(splits.items()):
        folder = root / task
        folder.mkdir(parents=True, exist_ok=True)
        _write(folder / f"{split}_questions.json", questions)
        _write(folder / f"{split}_outputs.json", {"task": task.replace("-", "_"), "golds": golds})
    _write(root / "styles.json", styles)


def _write(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    build()
    print(f"demo set written under {HERE}")
