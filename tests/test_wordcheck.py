"""The test-side checker itself must reject what it should, or every constrained test is void."""

from wordcheck import violations


def test_checker_accepts_list_words_and_capitalized_forms() -> None:
    assert violations("Hola, ¿qué tal? El perro.", "es", 3000) == []


def test_checker_rejects_unknown_words_digits_and_rare_words() -> None:
    assert violations("hola xyzzyq", "es", 3000) == ["xyzzyq"]
    assert violations("tengo 3 perros", "es", 3000) == ["<digit>"]
    assert "otorrinolaringólogo" in violations("el otorrinolaringólogo", "es", 3000)


def test_checker_handles_clitics() -> None:
    assert violations("l'homme", "fr", 3000) == []
    assert violations("l'xyzzyq", "fr", 3000) == ["l'xyzzyq"]
