import runbook_rag


def test_public_api_is_pinned() -> None:
    assert runbook_rag.__all__ == [
        "AccessMap",
        "Answer",
        "BuildReport",
        "Citation",
        "Hit",
        "Principal",
        "RunbookIndex",
        "RunbookRagError",
        "Settings",
        "Skipped",
    ]
    for name in runbook_rag.__all__:
        assert getattr(runbook_rag, name).__doc__


def test_every_error_derives_from_the_base() -> None:
    from runbook_rag import errors

    classes = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, Exception)]
    assert len(classes) >= 10
    for cls in classes:
        assert issubclass(cls, runbook_rag.RunbookRagError)
        assert cls.__name__ in errors.__doc__
