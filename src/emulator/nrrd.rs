//! The realtime-inference answer: a multipart body whose `params` part echoes the request and
//! whose `.nrrd` part is a small, valid label volume (the prompted classes drawn as blocks, the
//! positive points marked).

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// The `201` multipart answer for `image`, drawing `classes` and the positive `points`.
pub(super) fn inference_answer(
    image: &str,
    classes: &[u8],
    points: &[Value],
    point_labels: &[Value],
) -> Response {
    let (nx, ny, nz) = (16usize, 16usize, 4usize);
    let mut vol = vec![0u8; nx * ny * nz];
    for (k, c) in classes.iter().enumerate() {
        let x0 = (k * 5) % 12;
        for z in 0..nz {
            for y in 2..6 {
                for x in x0..(x0 + 4).min(nx) {
                    vol[z * nx * ny + y * nx + x] = *c;
                }
            }
        }
    }
    for (p, l) in points.iter().zip(point_labels) {
        let a = p.as_array().cloned().unwrap_or_default();
        let idx = |i: usize, n: usize| (a[i].as_f64().unwrap_or(0.0).max(0.0) as usize).min(n - 1);
        let (x, y, z) = (idx(0, nx), idx(1, ny), idx(2, nz));
        if l.as_i64().unwrap_or(0) > 0 {
            vol[z * nx * ny + y * nx + x] = classes.first().copied().unwrap_or(1);
        }
    }
    let mut nrrd = format!(
        "NRRD0004\n# label volume from the segbridge MONAI API emulator for image {image}\n\
         type: uint8\ndimension: 3\nspace: left-posterior-superior\nsizes: {nx} {ny} {nz}\n\
         space directions: (1,0,0) (0,1,0) (0,0,2.5)\nspace origin: (0,0,0)\n\
         encoding: raw\nendian: little\n\n"
    )
    .into_bytes();
    nrrd.extend_from_slice(&vol);
    let boundary = format!("emu{:016x}", rand::random::<u64>());
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"params\"\r\n\
             Content-Type: application/json\r\n\r\n{}\r\n",
            json!({"image": image, "label_prompt": classes, "points": points.len()})
        )
        .as_bytes(),
    );
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"label.nrrd\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&nrrd);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Response::builder()
        .status(StatusCode::CREATED)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
