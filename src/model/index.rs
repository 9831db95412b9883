//! What a source knows about image series: present series (study, modality), their instances,
//! those outside the dataset's image filter, and their geometry for the quality gate.

use std::collections::HashMap;

use super::quality::{InstanceGeometry, SeriesGeometry};

/// What a source knows about image series.
#[derive(Debug, Default, Clone)]
pub struct ImageIndex {
    /// series UID → (study UID, modality)
    series: HashMap<String, (String, String)>,
    /// SOP Instance UID → series UID
    instances: HashMap<String, String>,
    /// series UID → why the dataset's image filter excludes it
    excluded: HashMap<String, String>,
    /// series UID → its instances' geometry (for the quality gate), when known
    geometry: HashMap<String, SeriesGeometry>,
}

impl ImageIndex {
    /// Records one instance of `series`. `modality` is the instance's when it is an image, and
    /// empty for a non-image instance (an SR or a presentation state sharing the series UID),
    /// which then never decides the series' modality. What is kept does not depend on the
    /// order of the calls: the lowest study UID, the lowest non-empty modality.
    pub fn insert(&mut self, sop: &str, series: &str, study: &str, modality: &str) {
        self.insert_series(series, study, modality);
        self.instances.insert(sop.to_string(), series.to_string());
    }

    /// Records the geometry of one image instance (rows, columns, position).
    pub fn insert_geometry(&mut self, sop: &str, series: &str, g: InstanceGeometry) {
        let e = self
            .geometry
            .entry(series.to_string())
            .or_insert_with(|| SeriesGeometry {
                series: series.to_string(),
                ..Default::default()
            });
        e.instances.insert(sop.to_string(), g);
    }

    /// The geometry of an image series, when the source gave it.
    pub fn geometry(&self, series: &str) -> Option<&SeriesGeometry> {
        self.geometry.get(series)
    }

    /// Records a present image series without its instances (a remote source that checked it).
    pub fn insert_series(&mut self, series: &str, study: &str, modality: &str) {
        match self.series.get_mut(series) {
            None => {
                self.series.insert(
                    series.to_string(),
                    (study.to_string(), modality.to_string()),
                );
            }
            Some(have) => merge_series(have, study, modality),
        }
    }

    /// The modality of a present series, from its image instances (empty when unknown).
    pub fn modality_of(&self, series: &str) -> Option<&str> {
        self.series.get(series).map(|(_, m)| m.as_str())
    }

    /// Marks a present series as outside the dataset's image filter.
    pub fn exclude(&mut self, series: &str, reason: impl Into<String>) {
        self.excluded.insert(series.to_string(), reason.into());
    }

    /// Adds what another index knows.
    pub fn merge(&mut self, other: ImageIndex) {
        for (k, (study, modality)) in other.series {
            self.insert_series(&k, &study, &modality);
        }
        self.instances.extend(other.instances);
        self.excluded.extend(other.excluded);
        self.geometry.extend(other.geometry);
    }

    /// The study of a present image series.
    pub fn study_of(&self, series: &str) -> Option<&str> {
        self.series.get(series).map(|(st, _)| st.as_str())
    }

    /// Why the dataset's image filter excludes a present series, when it does.
    pub fn excluded_because(&self, series: &str) -> Option<&str> {
        self.excluded.get(series).map(String::as_str)
    }

    /// The study and modality recorded for `series`.
    pub fn series_entry(&self, series: &str) -> Option<(&str, &str)> {
        self.series
            .get(series)
            .map(|(st, m)| (st.as_str(), m.as_str()))
    }

    pub fn has_series(&self, series: &str) -> bool {
        self.series.contains_key(series)
    }

    pub fn series_of(&self, sop: &str) -> Option<&str> {
        self.instances.get(sop).map(String::as_str)
    }

    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// Every present series with its modality, in UID order.
    pub fn series_modalities(&self) -> Vec<(&str, &str)> {
        let mut v: Vec<(&str, &str)> = self
            .series
            .iter()
            .map(|(k, (_, m))| (k.as_str(), m.as_str()))
            .collect();
        v.sort_unstable();
        v
    }
}

/// Keeps the lowest study UID and the lowest non-empty modality, whatever the order.
fn merge_series(have: &mut (String, String), study: &str, modality: &str) {
    if study < have.0.as_str() {
        have.0 = study.to_string();
    }
    if !modality.is_empty() && (have.1.is_empty() || modality < have.1.as_str()) {
        have.1 = modality.to_string();
    }
}
