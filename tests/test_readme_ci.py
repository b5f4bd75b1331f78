"""The README's two commands and CI stay in sync."""
import re
import subprocess


def _readme_commands(repo_root):
    text = (repo_root / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README must start with a ```bash block holding the two commands"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_starts_with_demo_and_test_commands(repo_root):
    text = (repo_root / "README.md").read_text()
    first_block_start = text.index("```bash")
    assert text[:first_block_start].count("\n") <= 3, "the two commands must open the README"
    commands = _readme_commands(repo_root)
    assert len(commands) == 2
    assert "pip install" in commands[0] and "seamo demo" in commands[0]
    assert "pip install" in commands[1] and "pytest" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim(repo_root):
    # .ci/run extracts its command from the README; check it finds exactly the README line.
    script = (repo_root / ".ci" / "run").read_text()
    grep = re.search(r"grep -m1 -E '([^']+)' README.md", script)
    assert grep, ".ci/run must read its test command from README.md"
    found = subprocess.run(["grep", "-m1", "-E", grep.group(1), "README.md"], cwd=repo_root,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert found == _readme_commands(repo_root)[1]
