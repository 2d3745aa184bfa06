from ml.cli import app

app()
