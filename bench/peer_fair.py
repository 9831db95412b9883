"""The fair peer: the pairing a good Python engineer would write against a DICOMweb server when
speed matters, with no validation at all. The headline figures of BENCHMARKS.md compare
segbridge with this peer.

What it does, as fast as Python and DICOMweb allow:
1. one QIDO-RS listing of the SEG series (paged by dicomweb-client, 1,000 per page);
2. the image series listed once, in bulk (QIDO-RS, paged, with the dataset's filter), instead of
   one query per SEG;
3. one WADO-RS metadata call per SEG, 8 threads, each thread with its own requests Session
   (keep-alive) and its own DICOMweb client;
4. pairing by ReferencedSeriesSequence[0] (the training server's rule), kept only when that
   series is in the image listing;
5. notify, in batches of 100, on one Session.

usage:
  peer_fair.py backfill DICOMWEB_URL API_URL DATASET [FILTER]   # FILTER like Modality=CT
The API key comes from MONAI_API_KEY. Prints one JSON line of what it did.
"""
import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import requests
from dicomweb_client.api import DICOMwebClient

# login and notify exactly as the sequential peer does (the script's folder is on sys.path)
from peer import api_session, notify

THREADS = 8
PAGE = 1000


def uid(item, tag):
    return item[tag]["Value"][0]


def list_all(client, filters):
    """Every series matching `filters`, paged."""
    out, offset = [], 0
    while True:
        page = client.search_for_series(search_filters=filters, limit=PAGE, offset=offset)
        out.extend(page)
        if len(page) < PAGE:
            return out
        offset += len(page)


_local = threading.local()


def thread_client(url):
    c = getattr(_local, "client", None)
    if c is None:
        c = DICOMwebClient(url=url, session=requests.Session())
        _local.client = c
    return c


def referenced_series(url, study, series):
    meta = thread_client(url).retrieve_series_metadata(study, series)
    for inst in meta:
        seq = inst.get("00081115", {}).get("Value") or []
        if seq:
            ref = seq[0].get("0020000E", {}).get("Value") or []
            if ref:
                return series, ref[0]
    return series, None


def main():
    if sys.argv[1] != "backfill":
        sys.exit(__doc__)
    url, api, dataset = sys.argv[2], sys.argv[3], sys.argv[4]
    filters = dict([sys.argv[5].split("=", 1)]) if len(sys.argv) > 5 else {"Modality": "CT"}
    client = DICOMwebClient(url=url, session=requests.Session())
    segs = list_all(client, {"Modality": "SEG"})
    images = {uid(s, "0020000E") for s in list_all(client, filters)}
    with ThreadPoolExecutor(THREADS) as pool:
        pairs = list(pool.map(lambda s: referenced_series(url, uid(s, "0020000D"),
                                                          uid(s, "0020000E")), segs))
    entries = [{"image": img, "label": seg} for seg, img in pairs if img in images]
    notify(api_session(api), api, dataset, entries)
    print(json.dumps({"segs": len(segs), "images": len(images), "entries": len(entries)}))


if __name__ == "__main__":
    main()
