"""MATH answers as lm-evaluation-harness's minerva_math reads them: the final answer, normalised, compared for
equivalence (the rules of Lewkowycz et al. 2022, appendix D, as that harness implements them)."""

from __future__ import annotations

import re

INVALID = "[invalidanswer]"
_SUBSTITUTIONS = [("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), (r"\ ", ""), (" ", ""), ("mbox", "text"),
                  (",\\text{and}", ","), ("\\text{and}", ","), ("\\text{m}", "\\text{}")]
_REMOVED = ["square", "ways", "integers", "dollars", "mph", "inches", "ft", "hours", "km", "units", "\\ldots", "sue",
            "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters", "meals",
            "edges", "students", "childrentickets", "multiples", "\\text{s}", "\\text{.}", "\\text{\ns}",
            "\\text{}^2", "\\text{}^3", "\\text{\n}", "\\text{}", r"\mathrm{th}", r"^\circ", r"^{\circ}", r"\;",
            r",\!", "{,}", '"', "\\dots"]


def last_boxed(text: str) -> str | None:
    """The last `\\boxed{...}` (or `\\fbox{...}`) in `text`, braces balanced, or None."""
    if "\\boxed " in text:
        return "\\boxed " + text.split("\\boxed ")[-1].split("$")[0]
    start = text.rfind("\\boxed")
    if start < 0:
        start = text.rfind("\\fbox")
        if start < 0:
            return None
    depth = 0
    for index in range(start, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return text[start:index + 1]
    return None


def remove_boxed(boxed: str) -> str:
    if boxed.startswith("\\boxed "):
        return boxed[len("\\boxed "):]
    return boxed[boxed.index("{") + 1:-1]


def gold_answer(solution: str) -> str:
    """The normalised answer boxed in a reference solution."""
    boxed = last_boxed(solution)
    return normalize(remove_boxed(boxed)) if boxed else INVALID


def extract_answer(output: str) -> str:
    """The model's answer: `Final Answer: The final answer is X. I hope it is correct.` as the harness reads it,
    else (a model that was not shown that phrase) the last boxed expression."""
    match = re.search(r"Final Answer: The final answer is(.*?). I hope it is correct.",
                      output + "I hope it is correct.")
    if match:
        return normalize(match.group(1).strip())
    boxed = last_boxed(output)
    return normalize(remove_boxed(boxed)) if boxed else INVALID


def normalize(answer: str) -> str:
    """Normalise a final answer: units and text markup removed, shorthand TeX (`\\frac12`) written out."""
    answer = answer.split("=")[-1]
    for expr in _REMOVED:
        if expr.isalpha():
            answer = re.sub(rf"(?<!\\)\b{expr}\b", "", answer)
    for before, after in _SUBSTITUTIONS:
        answer = answer.replace(before, after)
    for expr in _REMOVED:
        if expr.isalpha():
            segments = re.split(r"(\\[a-zA-Z]+)", answer)
            for i in range(0, len(segments), 2):
                segments[i] = segments[i].replace(expr, "")
            answer = "".join(segments)
        else:
            answer = answer.replace(expr, "")
    answer = re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", answer)
    for command in ("text", "textbf", "overline"):
        answer = re.sub(rf"(\\{command}\{{)(.*?)(\}})", "\\2", answer)
    answer = re.sub(r"(\\boxed\{)(.*)(\})", "\\2", answer)
    answer = re.sub(r"(frac)([^{])(.)", "frac{\\2}{\\3}", answer)
    answer = re.sub(r"(sqrt)(\[[^\]]*\])(\w)", "\\1\\2{\\3}", answer)
    answer = re.sub(r"(sqrt)(?!\[)([^{])", "sqrt{\\2}", answer)
    answer = answer.replace("$", "")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+", answer):
        answer = answer.replace(",", "")
    return answer


def is_equiv(a: str, b: str) -> bool:
    """Whether two normalised answers are equal: as strings, or (when sympy's LaTeX parser and its antlr4
    runtime are installed) as expressions whose difference simplifies to 0."""
    if a == INVALID or b == INVALID:
        return False
    if a == b:
        return True
    import importlib.util

    if importlib.util.find_spec("antlr4") is None:  # sympy's LaTeX parser needs it
        return False
    try:
        from sympy import simplify
        from sympy.parsing.latex import parse_latex

        return simplify(parse_latex(a) - parse_latex(b)) == 0
    except Exception:  # no antlr4 runtime, or LaTeX sympy cannot parse or subtract: not shown equal
        return False
