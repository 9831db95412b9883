"""The Python peer segbridge is measured against: the usual way a Python service pairs labels
(MONAI Label's DICOMweb datastore, the training server): a QIDO-RS listing of SEG series, one
WADO-RS metadata call per SEG, ReferencedSeriesSequence[0], then notify. Written as a careful
Python engineer would: one requests Session (keep-alive) for DICOMweb and one for the API,
dicomweb-client paging, no needless work (series it already paired are not fetched again).

usage:
  peer.py backfill DICOMWEB_URL API_URL DATASET       # pair everything, notify, exit
  peer.py poll DICOMWEB_URL API_URL DATASET SECONDS   # poll forever; notify new labels
  peer.py scan FOLDER                                  # read every file's header (pydicom)
The API key comes from MONAI_API_KEY. Prints one JSON line of what it did.
"""
import json
import os
import sys
import time
from pathlib import Path

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient


def api_session(api):
    s = requests.Session()
    r = s.post(f"{api}/api/v1/login", json={"ngc_api_key": os.environ["MONAI_API_KEY"]})
    r.raise_for_status()
    s.headers["Authorization"] = "Bearer " + r.json()["token"]
    return s


def notify(s, api, dataset, entries, org="iasixjqzw1hj"):
    for i in range(0, len(entries), 100):
        body = {"action": "notify", "specs": {"added": entries[i:i + 100], "updated": [], "removed": []}}
        s.post(f"{api}/api/v1/orgs/{org}/datasets/{dataset}/jobs", json=body).raise_for_status()


def pair(client, known):
    entries = []
    series = client.search_for_series(search_filters={"Modality": "SEG"}, get_remaining=True)
    for s in series:
        st, se = s["0020000D"]["Value"][0], s["0020000E"]["Value"][0]
        if se in known:
            continue
        meta = client.retrieve_series_metadata(st, se)
        ds = pydicom.Dataset.from_json(meta[0])
        rss = ds.get("ReferencedSeriesSequence")
        known.add(se)
        if rss:
            entries.append({"image": rss[0].SeriesInstanceUID, "label": se})
    return entries


def main():
    mode = sys.argv[1]
    if mode == "scan":
        t, n, segs = time.time(), 0, 0
        for p in Path(sys.argv[2]).rglob("*"):
            if p.is_file():
                try:
                    ds = pydicom.dcmread(p, stop_before_pixels=True)
                except Exception:
                    continue
                n += 1
                segs += ds.get("Modality") == "SEG"
        print(json.dumps({"files": n, "segs": segs, "seconds": time.time() - t}))
        return
    url, api, dataset = sys.argv[2], sys.argv[3], sys.argv[4]
    client = DICOMwebClient(url=url, session=requests.Session())
    s = api_session(api)
    known = set()
    if mode == "backfill":
        entries = pair(client, known)
        notify(s, api, dataset, entries)
        print(json.dumps({"entries": len(entries)}))
        return
    every = float(sys.argv[5])
    while True:
        entries = pair(client, known)
        if entries:
            notify(s, api, dataset, entries)
            print(json.dumps({"notified": len(entries), "at": time.time()}), flush=True)
        time.sleep(every)


if __name__ == "__main__":
    main()
