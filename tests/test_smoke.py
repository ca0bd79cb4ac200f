import requests


def test_live_server_serves_the_shop(live_server):
    assert requests.get(live_server.url + "/", timeout=5).status_code == 200
