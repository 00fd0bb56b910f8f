from msec.cli.main import app

app(prog_name="msec")
