from mobilize.cli import run

run()
