"""A caller's yes or no, as people say it: "sure, no problem" is a yes, "I'd rather you didn't" a no.

    read_yes_no("Yes, I don't mind")        # True
    read_yes_no("absolutely not")          # False
    read_yes_no("I don't know")            # None: ask again

Read in this order, each a whole-word match on the lowered text:
1. unsure ("I don't know", "not sure", "say that again"): None, whatever else was said;
2. yes in the words of a no ("no problem", "I don't mind", "no objection", "why not"): a yes;
3. a no ("no", "don't", "absolutely not", "rather you didn't", "not comfortable", "I object", "opt out");
4. a yes ("yes", "sure", "okay", "absolutely", "I consent", "sounds good", "go ahead", "uh-huh").

A no outranks a yes in one breath ("yes... actually no"): for consent to record, reading a refusal as an
agreement is the mistake that must not happen. Used for recording consent and for a tool's yes/no argument.
"""

from __future__ import annotations

import re

__all__ = ["read_yes_no"]

_UNSURE = re.compile(
    r"\b(?:(?:do not|don't|dont) know|not sure|unsure|no idea|(?:say|repeat) (?:that|it)(?: again)?|"
    r"what do you mean|pardon|come again|what was that|i'm not sure|maybe|depends)\b")
_YES_DESPITE_NO = re.compile(
    r"\b(?:no problem|not a problem|no problems|no worries|no objections?|(?:do not|don't|dont|wouldn't|would not) "
    r"mind|doesn't bother me|does not bother me|why not|i don't see why not|no issues?|not at all a problem)\b")
_NO = re.compile(
    r"\b(?:no|nope|nah|naw|negative|never|don'?t|do not|doesn'?t|does not|won'?t|will not|decline|declined|"
    r"disagree|refuse|object|objection|rather not|rather you didn'?t|prefer not|prefer you didn'?t|"
    r"not (?:ok|okay|fine|really|comfortable|happy|alright|all right|good|now|today|interested|right)|can'?t|cannot|"
    r"absolutely not|of course not|certainly not|definitely not|opt out|stop|false)\b")
_YES = re.compile(
    r"\b(?:yes|yeah|yea|yep|yup|ya|yah|aye|sure|ok|okay|o\.k|alright|all right|agree|agreed|i agree|consent|"
    r"i consent|accept|i accept|fine|of course|go ahead|go for it|please do|absolutely|certainly|definitely|"
    r"indeed|sounds good|that's good|that is good|that works|correct|right|i do|uh[- ]?huh|mhm|mm[- ]?hmm|"
    r"affirmative|by all means|you may|you can|true|yes please|please)\b")


def read_yes_no(text: str) -> bool | None:
    """True for a yes, False for a no, None when the words are neither or the caller is unsure."""
    words = " ".join(text.lower().replace("\u2019", "'").split())
    if not words or _UNSURE.search(words):
        return None
    if _YES_DESPITE_NO.search(words):
        rest = _YES_DESPITE_NO.sub(" ", words)
        return False if _NO.search(_strip_leading_no(rest)) else True
    if _NO.search(words):
        return False
    if _YES.search(words):
        return True
    return None


def _strip_leading_no(text: str) -> str:
    # "No, no problem" / "no, I don't mind": the leading "no" answers "do you mind?", not the question of consent.
    return re.sub(r"^\W*(?:no\W+)+", "", text)
