"""The committed contracts in proto/ must match what the code generates (`make contracts`)."""

from browserfleet_devkit import contractgen


def test_committed_contracts_match_the_code() -> None:
    for path, content in contractgen.expected().items():
        assert path.exists(), f"{path.name} missing: run `make contracts`"
        assert path.read_text() == content, f"{path.name} drifted from the code: run `make contracts`"
