def pytest_addoption(parser):
    parser.addoption(
        "--executed-dir", default="_build/test/_build/executed", help="where make notebooks left the executed chapters"
    )
