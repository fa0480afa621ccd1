import io

from driver_loader.output.progress import BuildSpinner, DownloadBar


def test_download_bar_draws_nothing_off_a_terminal():
    out = io.StringIO()
    bar = DownloadBar("downloading kmod", stream=out, enabled=False)
    bar(10, 100)
    bar(100, 100)
    bar.close()
    assert out.getvalue() == ""


def test_download_bar_draws_and_clears_on_a_terminal():
    out = io.StringIO()
    bar = DownloadBar("downloading kmod", stream=out, enabled=True)
    bar(512 * 1024, 1024 * 1024)
    bar(1024 * 1024, 1024 * 1024)
    text = out.getvalue()
    assert "downloading kmod [" in text
    assert "1.0 MiB/1.0 MiB" in text
    bar.close()
    assert out.getvalue().endswith("\r\x1b[K")


def test_download_bar_without_a_length_shows_bytes():
    out = io.StringIO()
    DownloadBar("dl", stream=out, enabled=True)(2048, None)
    assert "2.0 KiB" in out.getvalue()


def test_build_spinner_off_a_terminal_logs_each_step(capsys):
    out = io.StringIO()
    spinner = BuildSpinner(stream=out, enabled=False)
    spinner("building the falco kernel module with gcc-12")
    spinner.close()
    assert out.getvalue() == ""
    assert "building the falco kernel module with gcc-12" in capsys.readouterr().err


def test_build_spinner_on_a_terminal_turns_until_closed():
    out = io.StringIO()
    spinner = BuildSpinner(stream=out, enabled=True)
    spinner("building")
    import time

    deadline = time.monotonic() + 5
    while "building (" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.05)
    spinner.close()
    assert "building (0s)" in out.getvalue()
    assert out.getvalue().endswith("\r\x1b[K")
