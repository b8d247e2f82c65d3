"""Speech the recognizer was not made for: requests outside the command language and free speech.

Each list is split in two disjoint halves: ``calibration`` texts choose the rejection
threshold (spoken by the training engines' validation voices), ``test`` texts measure it
(spoken by the held-out engine). No text is in both halves, and none is a phrase of the
grammar (``grammar.all_phrases``).
"""

from __future__ import annotations

import re
from pathlib import Path

# Requests a user may say to a media player that the grammar cannot express; near misses
# of grammar phrases on purpose ("go forward ten meters", "turn it up").
REQUESTS_TEST = (
    "go forward ten meters",
    "call mom",
    "turn it up",
    "open netflix",
    "play some jazz music",
    "next song please",
    "turn off the lights",
    "what time is it",
    "skip this song",
    "fast forward two minutes",
    "play the next one",
    "make it louder please",
    "show me the news",
    "volume to the max",
    "go back to the start",
    "set a timer for ten minutes",
    "play my favourite playlist",
    "turn the subtitles on",
    "switch to english audio",
    "record this show",
    "play episode one of friends",
    "find movies with tom hanks",
    "add this to my list",
    "who sings this song",
    "lower the brightness",
    "change the channel",
    "play it again",
    "stop the music now",
    "go back five seconds please",
    "start from the beginning",
    "play something relaxing",
    "text my brother",
    "skip the intro",
    "watch later",
    "jump to the end",
)
REQUESTS_CALIBRATION = (
    "turn it down",
    "call dad",
    "go forward twenty meters",
    "open youtube",
    "play some rock music",
    "previous song please",
    "turn on the lights",
    "what day is it",
    "skip this video",
    "fast forward one minute",
    "play the last one",
    "make it quieter please",
    "show me the weather",
    "volume to the minimum",
    "go back to the menu",
    "set an alarm for seven",
    "play my workout mix",
    "turn the captions off",
    "switch to spanish audio",
    "pause the recording",
    "play season one of the office",
    "find shows with cats",
    "remove this from my list",
    "what song is this",
    "raise the brightness",
    "go to the home screen",
    "play that one more time",
    "stop the video now",
    "rewind a little bit",
    "restart the episode",
    "play something happy",
    "message my sister",
    "skip the credits",
    "save for later",
    "go to the middle",
)
# Free speech: everyday sentences near a media player.
SENTENCES_TEST = (
    "i think we should leave before the traffic gets bad",
    "did you remember to buy milk on the way home",
    "the kids are asleep so keep your voice down",
    "this film was much better than i expected",
    "can you pass me the remote control",
    "my phone battery is almost empty again",
    "we are having pasta for dinner tonight",
    "the weather has been terrible all week",
    "i have no idea where i left my keys",
    "let us watch something funny this evening",
    "the meeting has been moved to thursday afternoon",
    "she told me the ending and spoiled everything",
    "how long does this documentary last",
    "i fell asleep halfway through the last episode",
    "the popcorn is in the kitchen cupboard",
    "my favourite actor is in this new series",
    "please do not talk during the movie",
    "the sound on this television is strange",
    "we could go to the cinema on saturday",
    "i need to charge the tablet before we travel",
)
SENTENCES_CALIBRATION = (
    "we ran out of coffee again this morning",
    "the train was late for the third time today",
    "i really enjoyed the concert last night",
    "can you help me carry these boxes upstairs",
    "the garden needs watering before the weekend",
    "he forgot his umbrella at the restaurant",
    "there is a new bakery around the corner",
    "my sister is visiting us next month",
    "the printer in the office is broken again",
    "let us order food instead of cooking",
    "the dog needs a walk before it gets dark",
    "i cannot decide what to wear to the party",
    "they painted the living room a bright yellow",
    "the book was better than the adaptation",
    "our neighbours are very noisy at night",
    "i would like a cup of tea with honey",
    "the museum is closed on mondays",
    "we should plan our summer holiday soon",
    "the soup is too salty for my taste",
    "he plays the guitar in a small band",
)
# Debian licence texts give sentences of a register no user says to a player: GPL-3 for
# the test half, GFDL-1.3 for calibration.
LICENCES = Path("/usr/share/common-licenses")
LICENCE_TEST, LICENCE_CALIBRATION = "GPL-3", "GFDL-1.3"


def licence_sentences(name: str, max_count: int = 30) -> tuple[str, ...]:
    """Up to ``max_count`` sentences of 5-14 plain words from a Debian licence text, lowercase,
    in file order (``()`` when the file is absent)."""
    path = LICENCES / name
    if not path.exists():
        return ()
    text = " ".join(path.read_text(errors="replace").split())
    out = []
    for sentence in re.split(r"(?<=[.!?;:])\s+", text):
        if not re.fullmatch(r"[A-Za-z ,.'\-;:]+", sentence):
            continue
        words = re.sub(r"[^a-z' ]", " ", sentence.lower().replace("-", " ")).split()
        if 5 <= len(words) <= 14:
            out.append(" ".join(words))
    return tuple(out[:max_count])


def requests(half: str) -> tuple[str, ...]:
    """Out-of-grammar requests of ``half`` ("test" or "calibration")."""
    return {"test": REQUESTS_TEST, "calibration": REQUESTS_CALIBRATION}[half]


def free_speech(half: str) -> tuple[str, ...]:
    """Free-speech sentences of ``half`` ("test" or "calibration"): everyday ones, then a licence's."""
    if half == "test":
        return SENTENCES_TEST + licence_sentences(LICENCE_TEST)
    if half == "calibration":
        return SENTENCES_CALIBRATION + licence_sentences(LICENCE_CALIBRATION)
    raise ValueError(f"unknown half {half!r}")
