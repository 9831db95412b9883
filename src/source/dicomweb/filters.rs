//! Which SEG series the dataset's filters hide from the service: it lists SEG series with the
//! image filter's search filters and `Modality=SEG`, so a SEG of a study that, say,
//! `StudyDescription=Kidney*` leaves out is never trained on, whatever it references.

use super::*;

impl DicomWeb {
    /// The SEG series among `segs` that the server does not list under [`DicomWeb::seg_filter`]
    /// with `Modality=SEG`, each with why: listed queries by UID, one query per SEG for what a
    /// list did not answer. Empty when there is no such filter.
    pub(super) async fn hidden_segs(
        &self,
        segs: &[SegSeries],
    ) -> Result<HashMap<String, String>, PacsError> {
        let Some(filter) = self.seg_filter.as_deref() else {
            return Ok(HashMap::new());
        };
        let uids: Vec<String> = segs
            .iter()
            .map(|s| s.uid().to_string())
            .filter(|u| is_uid(u))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let filtered = |at: Endpoint| at.query("Modality", "SEG").filter(filter);
        let mut seen: HashSet<String> = HashSet::new();
        let mut ask: Vec<String> = Vec::new();
        // as for image series: a list query pays off past a few UIDs
        if uids.len() > crate::source::orthanc::rest::BULK {
            for (batch, got) in self.listed_query("series", &uids, &filtered).await {
                match got {
                    Some(items) => seen.extend(
                        items
                            .iter()
                            .filter_map(|it| json_str(it, tags::SERIES_INSTANCE_UID)),
                    ),
                    None => ask.extend(batch),
                }
            }
            ask.retain(|u| !seen.contains(u));
        } else {
            ask = uids.clone();
        }
        let conc = self.client.options().concurrency.max(1);
        let found: Vec<Result<Option<String>, PacsError>> = stream::iter(ask)
            .map(|uid| async move {
                let q = filtered(Endpoint::at(&["series"]).query("SeriesInstanceUID", &uid));
                Ok((!self.qido(&q).await?.is_empty()).then_some(uid))
            })
            .buffer_unordered(conc)
            .collect()
            .await;
        for f in found {
            seen.extend(f?);
        }
        let why = format!(
            "SEG series is outside the dataset's filters ({filter}): the service never sees it"
        );
        Ok(uids
            .into_iter()
            .filter(|u| !seen.contains(u))
            .map(|u| (u, why.clone()))
            .collect())
    }
}
