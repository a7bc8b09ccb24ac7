"""The `deepdraft` command end to end: a real process, a real index, a real HTTP server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.openai_server import ErrorReply, FakeOpenAIServer
from tests.support.scenario import ScenarioModel, as_responder, classify_body


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `python -m deepdraft ARGS` with the test's environment (its private DEEPDRAFT_HOME)."""
    return subprocess.run(
        [sys.executable, "-m", "deepdraft", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, COLUMNS="200"),
        stdin=subprocess.DEVNULL,
    )


def reply(action: dict[str, object]) -> str:
    return f"<thought>because</thought><action>{json.dumps(action)}</action>"


def write(text: str) -> str:
    return f"<thought>claims from the passages</thought><action>{text}</action>"


def plans(*titles: str) -> list[dict[str, str]]:
    return [{"title": t, "plan": f"What to say about {t.lower()}."} for t in titles]


# Tests of the method's own request sequence leave out the passes that follow it (verification and
# synthesis, tested in test_verify.py and test_synthesis.py).
NO_FINISHING = ("--no-verify", "--no-synthesis")
SEARCH = reply({"name": "search", "keywords": ["tariffs", "tariff history"]})
# A fixed sequence of valid replies: the method's whole trajectory with two deepening steps, the
# second one splitting a level-2 node. Every keyword matches all five speeches, so every write's
# evidence holds textid1..textid5.
REPLIES = [
    SEARCH,
    reply(
        {
            "name": "init-plan",
            "title": "Presidents on Tariffs",
            "sections": plans("Revenue", "Protection", "Reform"),
        }
    ),
    *[
        SEARCH,
        write("Early presidents treated tariffs as the main source of federal revenue \\cite{textid1}."),
    ],
    *[
        SEARCH,
        write("Protection of industry and labor was the argument of the 1890 act \\cite{textid3, textid1}."),
    ],
    *[SEARCH, write("Reformers blamed high duties for closed markets and farm distress \\cite{textid4}.")],
    reply(
        {
            "name": "extend-plan",
            "position": "section-1",
            "subsections": plans("Paying the Debt", "Moderate Duties"),
        }
    ),
    *[SEARCH, write("Revenue from duties on imports was pledged to pay the public debt \\cite{textid1}.")],
    *[SEARCH, write("Presidents asked that the duties stay moderate to spare consumers \\cite{textid2}.")],
    reply(
        {"name": "extend-plan", "position": "section-1.1", "subsections": plans("Federal Debt", "Surplus")}
    ),
    *[SEARCH, write("The first addresses tied tariff revenue to the federal debt directly \\cite{textid1}.")],
    *[SEARCH, write("By 1890 the tariff brought a surplus into the treasury instead \\cite{textid3}.")],
    reply({"name": "nop"}),
]
EXPECTED_ORDER = [
    ("search", "outline"),
    ("init-plan", "outline"),
    ("search", "section-1"),
    ("write", "section-1"),
    ("search", "section-2"),
    ("write", "section-2"),
    ("search", "section-3"),
    ("write", "section-3"),
    ("extend-plan", "outline"),
    ("search", "section-1.1"),
    ("write", "section-1.1"),
    ("search", "section-1.2"),
    ("write", "section-1.2"),
    ("extend-plan", "outline"),
    ("search", "section-1.1.1"),
    ("write", "section-1.1.1"),
    ("search", "section-1.1.2"),
    ("write", "section-1.1.2"),
    ("extend-plan", "outline"),
]


@pytest.mark.slow
def test_research_issues_exactly_the_requests_the_method_prescribes(corpus_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "report.md"
    with FakeOpenAIServer.replaying(REPLIES) as server:
        result = cli("research", "How did presidents argue about tariffs?", "--kb", str(corpus_dir),
                     "--base-url", server.base_url, "--model", "fake-model", "--output", str(output),
                     *NO_FINISHING)  # fmt: skip
        requests = server.requests
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("run ")
    assert str(output) in result.stdout.replace("\n", "")

    assert [classify_body(body) for body in requests] == EXPECTED_ORDER
    for body in requests:
        assert body["model"] == "fake-model"
        assert body["temperature"] == 0.7 and body["top_p"] == 0.8 and body["max_tokens"] == 2048
        assert [m["role"] for m in body["messages"]] == ["user"]

    report = output.read_text(encoding="utf-8")
    assert report.startswith("# Presidents on Tariffs\n")
    for heading in ("## 1 Revenue", "### 1.1 Paying the Debt", "#### 1.1.1 Federal Debt", "#### 1.1.2 Surplus",
                    "### 1.2 Moderate Duties", "## 2 Protection", "## 3 Reform"):  # fmt: skip
        assert f"\n{heading}\n" in report
    assert "\\cite" not in report
    body, references = report.split("\n## References\n")
    numbers = {int(n) for n in __import__("re").findall(r"\[(\d+)\]", body)}
    assert numbers and numbers == set(range(1, len(numbers) + 1))
    entries = [line for line in references.splitlines() if line.startswith("[")]
    assert len(entries) == len(numbers)
    cited_files = {line.split("`")[1] for line in entries}
    assert all(
        Path(f).parent == corpus_dir.resolve() and Path(f).name.startswith("address-") for f in cited_files
    )


@pytest.mark.slow
def test_runs_and_show_list_the_run(corpus_dir: Path) -> None:
    with FakeOpenAIServer(as_responder(ScenarioModel(expansions=0))) as server:
        result = cli("research", "Tariffs?", "--kb", str(corpus_dir), "--base-url", server.base_url,
                     *NO_FINISHING)  # fmt: skip
        assert result.returncode == 0, result.stderr
    listed = cli("runs", "--json")
    runs = json.loads(listed.stdout)
    assert len(runs) == 1 and runs[0]["status"] == "finished" and runs[0]["steps"] == 9
    shown = json.loads(cli("show", runs[0]["id"][:12], "--json").stdout)
    assert shown["status"] == "finished" and Path(shown["report_path"]).is_file()
    assert [s["title"] for s in shown["outline"]["sections"]] == ["Part early", "Part middle", "Part late"]
    plain = cli("runs")
    assert plain.stdout.split("\t")[0] == runs[0]["id"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *phrases: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for phrase in phrases:
        assert phrase in lines[0]


def test_unreachable_endpoint(corpus_dir: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    result = cli("research", "q?", "--kb", str(corpus_dir), "--base-url", url, "--model", "m")
    assert_one_line_error(result, 3, "cannot reach the LLM", url, "deepdraft resume")


def test_endpoint_refusing_the_key(corpus_dir: Path) -> None:
    with FakeOpenAIServer(lambda body, index: ErrorReply(401, "bad key")) as server:
        result = cli("research", "q?", "--kb", str(corpus_dir), "--base-url", server.base_url, "--model", "m")
    assert_one_line_error(result, 3, "API key")


def test_no_llm_configured_names_the_fix(corpus_dir: Path) -> None:
    result = cli("research", "q?", "--kb", str(corpus_dir))
    assert_one_line_error(result, 2, "no LLM configured", "--base-url")
    assert "run " not in result.stdout  # nothing was started


def test_api_key_alone_never_selects_a_hosted_service(
    corpus_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-not-be-used")
    result = cli("research", "q?", "--kb", str(corpus_dir))
    assert_one_line_error(result, 2, "no LLM configured")


def test_empty_and_missing_knowledge_bases(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    url = f"http://127.0.0.1:{closed_port()}/v1"
    assert_one_line_error(cli("research", "q?", "--kb", str(empty), "--base-url", url), 2)
    assert_one_line_error(
        cli("research", "q?", "--kb", str(tmp_path / "nope"), "--base-url", url), 2, "no file or folder"
    )
    assert_one_line_error(cli("research", "q?", "--base-url", url), 2, "deepdraft setup")


def test_unknown_run_id() -> None:
    assert_one_line_error(cli("resume", "20990101-000000-abcdef"), 2, "no run with id")
    assert_one_line_error(cli("show", "nope-nope"), 2, "no run with id")


@pytest.mark.parametrize(
    ("flags", "phrase"),
    [
        (["--max-steps", "0"], "max_steps"),
        (["--max-expansions", "-1"], "max_expansions"),
        (["--base-url", "localhost:8000"], "http://"),
    ],
)
def test_bad_flag_values(corpus_dir: Path, flags: list[str], phrase: str) -> None:
    result = cli("research", "q?", "--kb", str(corpus_dir), *flags)
    assert_one_line_error(result, 2, phrase)


def test_unknown_policy_is_refused_by_the_parser(corpus_dir: Path) -> None:
    result = cli("research", "q?", "--kb", str(corpus_dir), "--policy", "magic")
    assert result.returncode == 2 and "magic" in result.stderr


def test_unknown_config_key_is_an_error(corpus_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[research]\nmax_step = 10\n", encoding="utf-8")
    result = cli("research", "q?", "--kb", str(corpus_dir), "--config", str(config))
    assert_one_line_error(result, 2, "research.max_step: unknown setting")


def test_config_file_flags_and_environment_precedence(corpus_dir: Path, tmp_path: Path) -> None:
    """TOML < env < flags: the flag's endpoint is the one that gets called."""
    with FakeOpenAIServer(as_responder(ScenarioModel(expansions=0))) as flag_server:
        config = tmp_path / "config.toml"
        config.write_text(f'[llm]\nbase_url = "http://127.0.0.1:{closed_port()}/v1"\n', encoding="utf-8")
        os.environ["OPENAI_BASE_URL"] = f"http://127.0.0.1:{closed_port()}/v1"
        try:
            result = cli("research", "q?", "--kb", str(corpus_dir), "--config", str(config),
                         "--base-url", flag_server.base_url, *NO_FINISHING)  # fmt: skip
        finally:
            del os.environ["OPENAI_BASE_URL"]
        assert result.returncode == 0, result.stderr
        assert len(flag_server.requests) == 9


def test_planner_and_writer_models_get_their_own_requests(corpus_dir: Path) -> None:
    with FakeOpenAIServer(
        as_responder(ScenarioModel(expansions=1)), models=("main", "plan-m", "write-m")
    ) as server:
        result = cli("research", "Tariffs?", "--kb", str(corpus_dir), "--base-url", server.base_url,
                     "--model", "main", "--planner-model", "plan-m", "--writer-model", "write-m",
                     *NO_FINISHING)  # fmt: skip
        assert result.returncode == 0, result.stderr
        by_model: dict[str, set[str]] = {}
        for body in server.requests:
            by_model.setdefault(body["model"], set()).add(classify_body(body)[0])
    assert by_model == {"main": {"search"}, "plan-m": {"init-plan", "extend-plan"}, "write-m": {"write"}}


def test_language_length_and_spending_flags_reach_the_run(corpus_dir: Path) -> None:
    with FakeOpenAIServer(as_responder(ScenarioModel(expansions=0))) as server:
        result = cli("research", "Tariffs?", "--kb", str(corpus_dir), "--base-url", server.base_url,
                     "--language", "English", "--length", "900", "--max-tokens-total", "2500", "--rpm", "600",
                     *NO_FINISHING)  # fmt: skip
        prompts = [body["messages"][-1]["content"] for body in server.requests]
    assert result.returncode == 0, result.stderr
    assert all("in English." in p for p in prompts)
    assert any("the whole report: about 900 words" in p for p in prompts)
    assert "token budget of 2,500" in result.stdout.replace("\n", " ")
